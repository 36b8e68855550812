"""Where a run's numbers go: one JSON line per step (always), TensorBoard if installed, W&B when asked.

The JSONL file is the record; the other sinks are views of it. Lines are flushed as written so a crash never
loses a finished step. Nothing here computes metrics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "read_metrics"]

logger = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None says "not available" without breaking readers
    return value


class MetricsWriter:
    def __init__(self, output_dir: str | Path, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "sfpo", config: dict | None = None, resume_step: int | None = None):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # steps after the checkpoint are recomputed (identically); drop their old lines to avoid duplicates
            keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif self.path.exists() and self.path.stat().st_size:
            # a fresh start over the lines of a run that left no checkpoint: keep them aside, never mix them in
            stale = self.path.with_name(f"metrics.{int(time.time())}.jsonl.bak")
            self.path.rename(stale)
            logger.warning("%s held lines of an earlier run without a checkpoint; moved to %s", self.path, stale)
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError:
                logger.info("tensorboard is not installed; metrics go to %s only", self.path)
        self._wandb = None
        if wandb:
            import wandb as wb  # opt-in: a missing package is the user's error to see

            self._wandb = wb.init(project=wandb_project, config=config, dir=str(self.dir), resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
