"""The whole SFPO step in a few lines, for readers and for tests: Algorithm 1 of the paper with the optimizer
state carried through (the official code's choice), no switch, no trust region, no momentum, no guard.
``SlowFastUpdate.step`` with the same settings gives the same bits (tests/core/test_reference.py); everything
else in slow_fast.py is what a real run needs beside it (offloading θ0, resuming mid-step, abandoning a step)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

__all__ = ["sfpo_step"]


def sfpo_step(params: Sequence[torch.Tensor], base_pass: Callable[[], Any], inner_steps: int, alpha: float) -> None:
    """One training step on one rollout batch; ``base_pass()`` is one pass of the base update (GRPO, DAPO, ...)
    over the batch, optimizer steps included."""
    params = [p for p in params if p.requires_grad]
    if alpha > 0 and inner_steps > 0:
        theta0 = [p.detach().clone() for p in params]  # θ0: where the step starts
        for _ in range(inner_steps):  # Stage I: K fast passes
            base_pass()
        with torch.no_grad():  # Stage II: reposition θ̃ = θ0 + α(θK − θ0), written as θK.lerp(θ0, 1 − α)
            for p, p0 in zip(params, theta0):
                p.lerp_(p0, 1.0 - alpha)
    base_pass()  # Stage III: the slow pass from θ̃ (α = 0 or K = 0: the step is one plain pass)
