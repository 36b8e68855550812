"""Graceful preemption for a transformers ``Trainer`` (``SFPOTrainer`` adds it by itself): on SIGTERM or SIGINT the
optimizer step in flight finishes, a checkpoint of it is saved, and training stops; ``raise_if_preempted`` then
ends the process with 143/130 as ``sfpo.preemption`` does for the native trainer.

All ranks stop at the same optimizer step (a flag reduced over the process group at each step end), so no rank
waits forever in a collective its neighbours left. The checkpoint is the Trainer's own, written as usual.
"""

from __future__ import annotations

import logging
import os
import signal

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sfpo.preemption import Preempted, PreemptionHandler

__all__ = ["PreemptionCallback"]

logger = logging.getLogger(__name__)


class PreemptionCallback(TrainerCallback):
    """Turns SIGTERM/SIGINT into "save at the end of this optimizer step, then stop"."""

    def __init__(self) -> None:
        self.handler = PreemptionHandler()
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.stopped_at = None
        self.handler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if _any_rank(self.handler.received is not None):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.handler.__exit__()

    def raise_if_preempted(self, trainer) -> None:
        """After ``Trainer.train`` returned: when a signal stopped it, make sure the last optimizer step is saved
        (a signal after the last step end finds no save scheduled), log one line and raise ``Preempted``."""
        self.handler.__exit__()  # also when train() raised before on_train_end
        if self.stopped_at is None and self.handler.received is None:
            return
        step = trainer.state.global_step
        path = os.path.join(trainer.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        if not os.path.isdir(path):
            trainer._save_checkpoint(trainer.model, trial=None)
        error = Preempted(self.handler.received or signal.SIGTERM, step, path)
        logger.warning("preempted: %s", error)
        raise error


def _any_rank(flag: bool) -> bool:
    """``flag`` or-ed over the ranks of the default process group (a lone process: itself)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
