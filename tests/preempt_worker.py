"""Run by test_preemption.py: ``sfpo train`` (the CLI, so exit codes are real) on the tiny model into OUTPUT_DIR,
sending itself signals at chosen places. ``python preempt_worker.py OUTPUT_DIR [SIG:WHERE:N ...] [key=value ...]``:
SIG is TERM or INT; WHERE is "update" (inside the N-th update of this process, after its first pass), "save"
(inside the N-th step-checkpoint write, after the weights and before trainer_state.pt), "rollout" (inside the
N-th rollout) or "start" (before the N-th training step). Prints "training <step>" once the trainer is built."""

import os
import signal
import sys

import sfpo.trainer
from sfpo.cli import main
from test_trainer import BASE
from tiny import ToyTask, make_model, make_tokenizer

RUN = ["algorithm.name=sfpo", "algorithm.inner_steps=2", "algorithm.switch=entropy", "algorithm.switch_window=3",
       "algorithm.switch_threshold=0.5", "optim.warmup_steps=3", "steps=8", "checkpoint_every=0",
       "keep_checkpoints=2", "eval.every=3"]


def _signal_on(n: int, sig: int):
    count = [0]

    def maybe() -> None:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), sig)
    return maybe


def trainer_factory(plan: list[tuple[int, str, int]], Trainer=sfpo.trainer.Trainer):
    """What ``sfpo train`` builds instead of sfpo.trainer.Trainer: the tiny run, with ``plan``'s signals wired in."""
    def make(cfg):
        tok = make_tokenizer()
        t = Trainer(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask())
        for sig, where, n in plan:
            fire = _signal_on(n, sig)
            if where == "update":
                step = t.update.step

                def in_update(one_pass, step=step, fire=fire, **kw):
                    calls = [0]

                    def first_then_signal():
                        out = one_pass()
                        calls[0] += 1
                        if calls[0] == 1:
                            fire()
                        return out
                    return step(first_then_signal, **kw)
                t.update.step = in_update
            elif where == "save":
                save_model = t.checkpoints.save_model

                def in_save(path, *a, save_model=save_model, fire=fire):
                    save_model(path, *a)
                    if path.parent.name == "checkpoints":
                        fire()
                t.checkpoints.save_model = in_save
            elif where == "rollout":
                generate = t.engine.generate

                def in_rollout(*a, generate=generate, fire=fire, **k):
                    out = generate(*a, **k)
                    fire()
                    return out
                t.engine.generate = in_rollout
            elif where == "start":
                train_step = t.train_step

                def at_start(train_step=train_step, fire=fire):
                    fire()
                    return train_step()
                t.train_step = at_start
        print("training", t.step, flush=True)
        return t
    return make


def parse_plan(args: list[str]) -> list[tuple[int, str, int]]:
    return [(getattr(signal, "SIG" + a.split(":")[0]), a.split(":")[1], int(a.split(":")[2]))
            for a in args if a.count(":") == 2 and "=" not in a]


def train_argv(out, overrides: list[str]) -> list[str]:
    config = f"{out}.yaml"  # the settings come as overrides; `sfpo train` wants a file first
    with open(config, "w") as f:
        f.write("{}\n")
    return ["train", config, *BASE, *RUN, "log.progress=false", f"output_dir={out}", *overrides]


if __name__ == "__main__":
    out, *rest = sys.argv[1:]
    sfpo.trainer.Trainer = trainer_factory(parse_plan(rest))
    sys.exit(main(train_argv(out, [a for a in rest if "=" in a])))
