"""Run by test_trl_checkpoint_kill.py (and deepspeed_worker.py's kill scenario): a tiny SFPOTrainer run that
SIGKILLs itself at one stage of writing checkpoint-N, as a kill from outside at that moment would.
``python kill_worker.py OUTPUT_DIR N STAGE [DEEPSPEED_CONFIG_JSON]``; under DeepSpeed, stage "ds_engine" dies
inside DeepSpeed's own checkpoint (model states written, optimizer partitions not)."""

import json
import os
import signal
import sys

import torch
from transformers import TrainerState

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer
from tiny_trl import train

RUN = dict(inner_steps=2, steps_per_generation=4, max_steps=6, switch="never", save_strategy="steps", save_steps=1)


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(output_dir: str, n: int, stage: str, deepspeed: dict | None = None) -> None:
    folder = f"checkpoint-{n}"
    extra = {}
    if deepspeed is not None:
        import ds_cpu

        ds_cpu.setup()
        extra = dict(deepspeed=deepspeed, use_cpu=False, bf16=deepspeed.get("bf16", {}).get("enabled", False))
    if stage == "folder":  # the folder exists, nothing is in it yet
        save_model = SFPOTrainer.save_model

        def patched(self, output_dir=None, _internal_call=False):
            if self.state.global_step == n:
                os.makedirs(output_dir, exist_ok=True)
                die()
            return save_model(self, output_dir, _internal_call)

        SFPOTrainer.save_model = patched
    elif stage == "weights":  # model files written, no optimizer, RNG, SFPO or trainer state
        save_optimizer = SFPOTrainer._save_optimizer_and_scheduler

        def patched(self, output_dir):
            if self.state.global_step == n:
                die()
            return save_optimizer(self, output_dir)

        SFPOTrainer._save_optimizer_and_scheduler = patched
    elif stage == "sfpo_state":  # the SFPO state written to its temporary name, not yet renamed into place
        save = torch.save

        def patched(obj, f, *a, **k):
            save(obj, f, *a, **k)
            if isinstance(f, str) and folder in f and f.endswith(".tmp"):
                die()

        torch.save = patched
    elif stage == "ds_engine":  # DeepSpeed wrote its module states into the folder, then the process died
        save = torch.save

        def patched(obj, f, *a, **k):
            save(obj, f, *a, **k)
            if isinstance(f, str) and folder in f and "model_states" in f:
                die()

        torch.save = patched
    elif stage == "trainer_state":  # trainer_state.json cut off halfway through
        save_to_json = TrainerState.save_to_json

        def patched(self, json_path):
            save_to_json(self, json_path)
            if self.global_step == n:
                with open(json_path, "r+") as f:
                    f.truncate(os.path.getsize(json_path) // 2)
                die()

        TrainerState.save_to_json = patched
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    train(SFPOTrainer, SFPOConfig, output_dir, **RUN, **extra)
    raise SystemExit(f"the run finished without reaching {folder} at stage {stage!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else None)
