"""The rollout interface: what an engine returns and the two verbs it offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["SamplingParams", "Rollout", "RolloutEngine"]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    """Samples per prompt (the group size G); samples of prompt i are rows i*n .. i*n+n-1."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    seed: int | None = None
    """Seeds the sampler so a step's rollouts are reproducible (and identical after a resume)."""


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (N, P) left-padded prompt tokens, N = prompts * n
    prompt_mask: torch.Tensor  # (N, P) 1 on real prompt tokens
    completion_ids: torch.Tensor  # (N, T) right-padded sampled tokens, EOS included when emitted
    completion_mask: torch.Tensor  # (N, T) 1 on sampled tokens (up to and including EOS)
    sampling_logprobs: torch.Tensor  # (N, T) log π(token) at the sampling temperature, before top-p
    texts: list[str]  # decoded completions, EOS and padding removed
    truncated: torch.Tensor  # (N,) bool: hit max_new_tokens without EOS

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        """Sample ``params.n`` completions for each prompt."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...
