"""Step time with the old log-probs taken from the first pass's own forward against their own forward at θ0.

When a pass is one optimizer step (``optim.mini_batches=1``), the trainer takes the old log-probs from the first
pass (``Trainer._old_from_first_pass``); this forces the separate forward for the comparison. The model, batch and
completion length are those of ``benchmarks/bench_trl.py`` (testbed Qwen2, random init, fixed-length completions),
GRPO and SFPO (K=3), one fresh trainer per setting in this process; medians over ``--steps`` steps after one
warm-up step, process CPU time beside wall time (the steadier measure on a shared machine).

    python benchmarks/bench_handover.py                     # 32 prompts × 8 × 16 tokens, micro-batches of 64
    python benchmarks/bench_handover.py --prompts 2 --generations 2 --tokens 4 --steps 1   # seconds

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_head import _commit  # noqa: E402
from bench_trl import Setup, _FixedLength, _policy  # noqa: E402


def run(args, algo: str, handover: bool) -> dict:
    from sfpo.config import TrainConfig
    from sfpo.rollout.hf import HFEngine
    from sfpo.tasks.arithmetic import ArithmeticTask
    from sfpo.trainer import Trainer

    tok, model = _policy(Setup(threads=args.threads, size=args.size))
    cfg = TrainConfig(seed=0, steps=args.steps + 1, resume=False, threads=args.threads,
                      output_dir=tempfile.mkdtemp(prefix="bench_handover_"))
    cfg.algorithm.name = algo
    cfg.algorithm.inner_steps, cfg.algorithm.alpha, cfg.algorithm.switch = 3, 0.8, "never"
    cfg.rollout.num_prompts, cfg.rollout.group_size = args.prompts, args.generations
    cfg.rollout.max_new_tokens = args.tokens
    cfg.optim.mini_batches, cfg.optim.micro_batch_size = 1, args.micro_batch_size
    cfg.eval.every = 0
    cfg.log.tensorboard = cfg.log.progress = cfg.log.plot = False
    trainer = Trainer(cfg, model=model, tokenizer=tok, task=ArithmeticTask())
    assert trainer._old_from_first_pass()
    if not handover:
        trainer._old_from_first_pass = lambda: False
    model.generation_config.eos_token_id = None  # fixed-length completions, as in bench_trl.py
    trainer.engine = HFEngine(model, _FixedLength(tok))
    cpu, wall, old, update = [], [], [], []
    for i in range(cfg.steps):
        c0, w0 = time.process_time(), time.perf_counter()
        metrics = trainer.train_step()
        trainer.step += 1
        if i:  # the first step is warm-up
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            old.append(metrics["time/old_logprobs"])
            update.append(metrics["time/update"])
    trainer.writer.close()
    med = statistics.median
    return {"algorithm": algo, "handover": handover, "step_cpu_s": med(cpu), "step_wall_s": med(wall),
            "old_logprobs_wall_s": med(old), "update_wall_s": med(update)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--micro-batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--size", default="tiny")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    rows = [run(args, algo, handover) for algo in ("grpo", "sfpo") for handover in (False, True)]
    print(f"testbed Qwen2 '{args.size}', {args.prompts} prompts × {args.generations} × {args.tokens} tokens, one "
          f"optimizer step per pass, micro-batches of {args.micro_batch_size}, {args.threads} thread(s); medians of "
          f"{args.steps} steps")
    print(f"{'algorithm':<10}{'old log-probs':>22}{'step CPU s':>12}{'step wall s':>12}{'old lp wall s':>14}"
          f"{'update wall s':>14}")
    for r in rows:
        how = "first pass's forward" if r["handover"] else "own forward"
        print(f"{r['algorithm']:<10}{how:>22}{r['step_cpu_s']:>12.3f}{r['step_wall_s']:>12.3f}"
              f"{r['old_logprobs_wall_s']:>14.4f}{r['update_wall_s']:>14.3f}")
    ratios = {a: next(r for r in rows if r["algorithm"] == a and r["handover"])["step_cpu_s"]
              / next(r for r in rows if r["algorithm"] == a and not r["handover"])["step_cpu_s"]
              for a in ("grpo", "sfpo")}
    result = {"bench": "handover", "commit": _commit(), "rows": rows, "step_cpu_ratio": ratios, **vars(args)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
