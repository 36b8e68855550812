"""Graceful preemption: SIGTERM (what SLURM, Kubernetes and preemptible clouds send before a kill) and SIGINT
(Ctrl-C) become a request that the trainer honours at the next step boundary — the step in flight finishes, the
last completed step is checkpointed, metrics are flushed — followed by exit status 128 + signal (143, 130).

A second signal while the first is being honoured exits at once with the same status: checkpoint writes are
atomic (a folder is complete only once trainer_state.pt is renamed into it), so stopping anywhere leaves the
newest complete checkpoint intact. This module only turns signals into a flag; the trainer decides what to save.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["Preempted", "PreemptionHandler", "SIGNALS"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""What a scheduler sends before a kill (SIGTERM) and what Ctrl-C sends (SIGINT). The exit status after either is
the shell's 128 + signal (143, 130): schedulers read 143 as "stopped on request", and a requeue policy acts on it."""


class Preempted(SystemExit):
    """Training stopped on a signal at a step boundary; ``checkpoint`` holds the last completed step (None when no
    step had completed: a rerun starts from the beginning, losing nothing).

    A ``SystemExit`` with status 128 + signal: the signal asked the process to end, and it still does once the
    checkpoint is safe (uncaught, no traceback, exit 143/130); ``except Preempted`` keeps a script going."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if checkpoint is None:
            what = f"stopped by {name} before a training step completed in this process: nothing new to save"
        else:
            what = f"stopped by {name} after step {step}: saved {checkpoint}"
        super().__init__(self.exit_code)
        self.message = f"{what}; rerun the same command to resume (no completed step is lost)"

    def __str__(self) -> str:
        return self.message


class PreemptionHandler:
    """Context manager: while entered, SIGTERM/SIGINT set ``received`` instead of killing the process; a second
    one exits at once. Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionHandler:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, signal.SIG_DFL if previous is None else previous)  # None: installed outside Python
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            # stderr unbuffered write, not logging: this may run inside a logging call of the main thread
            sys.stderr.write(f"\n{name} again: exiting now (the newest complete checkpoint stays intact)\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.received = signum
        sys.stderr.write(f"\n{name} received: finishing the step in flight, then saving a checkpoint "
                         f"(send it again to stop at once)\n")
        sys.stderr.flush()
