"""Rewards for math reasoning: answer extraction, time-limited comparison, and TRL-compatible reward functions;
``score`` is a task's reward on a batch of completions, as the trainer and ``sfpo eval`` compute it.

``get_reward(name)`` returns a function ``fn(completions, **columns) -> list[float | None]`` usable as a TRL
``reward_funcs`` entry or through a task's ``reward``. Importing this package does not import math-verify: the
comparison runs in a worker process (``sfpo.rewards.verifier``).
"""

from __future__ import annotations

from typing import Callable

from sfpo.rewards.accuracy import GOLD_COLUMNS, gsm8k_accuracy_reward, math_accuracy_reward, sfpo_math_reward
from sfpo.rewards.extract import (completion_text, extract_all_boxed, extract_boxed, extract_gsm8k, gold_answer,
                                  parse_number)
from sfpo.rewards.formatting import boxed_format_reward, think_format_reward
from sfpo.rewards.scoring import RewardError, score
from sfpo.rewards.verifier import MathVerifier, Verdict, VerifierError, default_verifier, set_default_verifier

__all__ = [
    "REWARDS", "get_reward", "GOLD_COLUMNS", "score", "RewardError",
    "math_accuracy_reward", "sfpo_math_reward", "gsm8k_accuracy_reward", "boxed_format_reward", "think_format_reward",
    "completion_text", "extract_boxed", "extract_all_boxed", "extract_gsm8k", "gold_answer", "parse_number",
    "MathVerifier", "Verdict", "VerifierError", "default_verifier", "set_default_verifier",
]

RewardFn = Callable[..., list]

REWARDS: dict[str, RewardFn] = {
    "math_accuracy": math_accuracy_reward,
    "sfpo_math": sfpo_math_reward,
    "gsm8k_accuracy": gsm8k_accuracy_reward,
    "boxed_format": boxed_format_reward,
    "think_format": think_format_reward,
}


def get_reward(name: str) -> RewardFn:
    """The reward function registered as ``name``; a ValueError listing the known names otherwise."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARDS)}") from None
