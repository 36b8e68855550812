"""Group-relative advantages for outcome rewards (one scalar reward per sampled response).

Every function takes rewards shaped (num_prompts * group_size,) laid out group by group, i.e. the
``group_size`` responses of prompt ``i`` are rows ``i*G .. i*G+G-1`` — the layout TRL and verl use —
and returns one advantage per response. Broadcasting the advantage over response tokens is the loss's job.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["ADVANTAGES", "grpo_advantages", "drgrpo_advantages", "batch_std_advantages", "rloo_advantages",
           "compute_advantages"]


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (num_prompts * group_size,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    if not rewards.is_floating_point():  # integer 0/1 rewards: std/mean need a float dtype
        rewards = rewards.float()
    return rewards.view(-1, group_size)  # (P, G)


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: A_i = (r_i - mean(group)) / (std(group) + eps), sample std (unbiased), as TRL and verl."""
    r = _grouped(rewards, group_size)
    std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
    return ((r - r.mean(dim=1, keepdim=True)) / (std + eps)).reshape(-1)


def drgrpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Dr.GRPO (Liu et al. 2025): A_i = r_i - mean(group); no std scaling, which biases toward easy/hard groups."""
    r = _grouped(rewards, group_size)
    return (r - r.mean(dim=1, keepdim=True)).reshape(-1)


def batch_std_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-mean baseline scaled by the std of the whole batch (TRL ``scale_rewards="batch"``)."""
    r = _grouped(rewards, group_size)
    centered = r - r.mean(dim=1, keepdim=True)
    std = r.std() if r.numel() > 1 else r.new_zeros(())
    return (centered / (std + eps)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """RLOO: A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean(group)). Needs G >= 2."""
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2 (a leave-one-out baseline)")
    r = _grouped(rewards, group_size)
    return (r - r.mean(dim=1, keepdim=True)).mul(group_size / (group_size - 1)).reshape(-1)


ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
    "batch_std": batch_std_advantages,
    "rloo": rloo_advantages,
}


def compute_advantages(name: str, rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Dispatch by name; an unknown name is an error that lists the known ones."""
    try:
        fn = ADVANTAGES[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGES)}") from None
    return fn(rewards.float(), group_size, eps)
