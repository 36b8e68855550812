"""Run by test_kill_drill.py: one tiny SFPO run into OUTPUT_DIR that resumes from its newest checkpoint, with a
checkpoint every step. Prints "training" once the trainer is built, so the drill can kill it mid-run."""

import sys

from sfpo.config import load_config
from sfpo.trainer import Trainer
from test_trainer import BASE
from tiny import ToyTask, make_model, make_tokenizer

RUN = ["algorithm.name=sfpo", "algorithm.inner_steps=2", "algorithm.switch=entropy", "algorithm.switch_window=3",
       "algorithm.switch_threshold=0.5", "optim.warmup_steps=3", "steps=24", "checkpoint_every=1",
       "keep_checkpoints=2", "eval.every=4"]


def main(output_dir: str) -> None:
    cfg = load_config(None, BASE + RUN + [f"output_dir={output_dir}"])
    tok = make_tokenizer()
    trainer = Trainer(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask())
    print("training", trainer.step, flush=True)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1])
