"""Run by test_trl_preemption.py under ``accelerate launch`` with 2 processes: only rank 1 gets SIGTERM, inside
optimizer step 3. Both ranks must stop after that step with one checkpoint-3 (else rank 0 would wait forever in
the next step's all-reduce); each writes what it saw to RESULT_DIR/rank<r>.json."""

import json
import os
import signal
import sys

import torch.distributed as dist
from transformers import TrainerCallback

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer
from sfpo.preemption import Preempted
from tiny_trl import SMALL, make_dataset, make_model, make_tokenizer, ones_reward


class SignalRankOne(TrainerCallback):
    def on_optimizer_step(self, args, state, control, **kwargs):
        if dist.get_rank() == 1 and state.global_step + 1 == 3:
            os.kill(os.getpid(), signal.SIGTERM)


def main(output_dir: str, result_dir: str) -> None:
    tok = make_tokenizer()
    args = SFPOConfig(output_dir=output_dir, **{**SMALL, "steps_per_generation": 2}, inner_steps=2, max_steps=9)
    trainer = SFPOTrainer(model=make_model(tok), reward_funcs=ones_reward, args=args, train_dataset=make_dataset(),
                          processing_class=tok, callbacks=[SignalRankOne()])
    code = 0
    try:
        trainer.train()
    except Preempted as e:
        code = e.code
    with open(os.path.join(result_dir, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"code": code, "global_step": trainer.state.global_step}, f)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as end_distributed_run: no interpreter teardown after a gloo run


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
