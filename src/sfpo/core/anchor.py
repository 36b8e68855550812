"""θ0, the anchor: one copy of the trainable parameters taken where a training step starts.

The SFPO update repositions toward it (θ̃ = θ0 + α(θK − θ0) is a lerp of the live weights toward θ0) and the NaN
guard puts it back when a step is abandoned or measures how far a step has moved from it. Both share this one
object, so there is exactly one anchor in memory. It is allocated once and reused every step, optionally on
another device (``device="cpu"`` offloads it from an accelerator, pinned when possible); tensors then come back one
at a time, so the peak on the parameters' device is one tensor, never a whole second copy.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Anchor", "norm_of"]


class Anchor:
    """θ0 for ``params`` (the trainable tensors, in the optimizer's order)."""

    def __init__(self, params: list[torch.Tensor], device: torch.device | None = None) -> None:
        self.params = params
        self.device = device
        self.tensors: list[torch.Tensor] | None = None  # allocated on the first take()
        self.valid = False  # holds this step's θ0

    @torch.no_grad()
    def take(self) -> None:
        """θ0 ← θ."""
        if self.tensors is None:
            pin = self.device is not None and self.device.type == "cpu" and torch.cuda.is_available() and \
                any(p.is_cuda for p in self.params)
            self.tensors = [torch.empty_like(p, device=self.device or p.device, pin_memory=pin) for p in self.params]
        torch._foreach_copy_(self.tensors, [p.detach() for p in self.params])
        self.valid = True

    @torch.no_grad()
    def restore(self) -> None:
        """θ ← θ0."""
        if self.device is None:
            torch._foreach_copy_([p.detach() for p in self.params], self.tensors)
        else:  # one tensor at a time: never a whole second copy on the parameters' device
            for p, a in zip(self.params, self.tensors):
                p.detach().copy_(a, non_blocking=True)

    @torch.no_grad()
    def pull(self, weight: float) -> None:
        """θ ← θ + weight·(θ0 − θ), in place; weight 0 leaves the bits alone (θ̃ = θ0 + α(θK − θ0) is weight
        1 − α)."""
        if weight == 0.0:
            return
        live = [p.detach() for p in self.params]
        if self.device is None:
            torch._foreach_lerp_(live, self.tensors, weight)
        else:
            for p, a in zip(live, self.tensors):
                p.lerp_(a.to(p.device, non_blocking=True), weight)

    def here(self, i: int, device: torch.device) -> torch.Tensor:
        """The i-th tensor of θ0 on ``device`` (a view when it already lives there)."""
        return self.tensors[i].to(device, non_blocking=True)

    def distance(self) -> float:
        """‖θ − θ0‖ over all trainable tensors, in float32 per tensor, one host sync per device. Transient
        memory: one tensor's difference at a time."""
        return norm_of([torch.linalg.vector_norm(p.detach().float() - a.to(p.device, non_blocking=True).float())
                        for p, a in zip(self.params, self.tensors)])

    def norm(self) -> float:
        """‖θ0‖."""
        return norm_of([torch.linalg.vector_norm(a, dtype=torch.float32) for a in self.tensors])

    def copies(self) -> list[torch.Tensor]:
        """Detached copies of θ0 (for a checkpoint: training on must not change it)."""
        return [a.detach().clone() for a in self.tensors]

    @torch.no_grad()
    def load(self, tensors: list[torch.Tensor]) -> None:
        """θ0 ← ``tensors`` (from a checkpoint), on this anchor's device and in the parameters' dtypes."""
        if len(tensors) != len(self.params) or any(t.shape != p.shape for t, p in zip(tensors, self.params)):
            raise ValueError("checkpointed SFPO anchor does not match the trainable parameters")
        self.tensors = [t.to(self.device or p.device, dtype=p.dtype, copy=True) for t, p in zip(tensors, self.params)]
        self.valid = True

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors or [])


def norm_of(norms: list[torch.Tensor]) -> float:
    """The norm of the concatenation of tensors whose norms are given: one host sync per device (not one per
    tensor: hundreds of syncs cost more than the arithmetic on an accelerator)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for n in norms:  # several devices (pipeline-split models): one stack per device
        by_device.setdefault(n.device, []).append(n)
    return math.sqrt(sum(float(torch.stack(ns).double().square().sum()) for ns in by_device.values()))
