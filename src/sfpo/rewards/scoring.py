"""A task's reward on a batch of completions: what a training step and an evaluation both score with."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sfpo.tasks.base import Example, Task

__all__ = ["score", "RewardError"]

logger = logging.getLogger(__name__)


class RewardError(RuntimeError):
    """A task's verifier raised; the message names the example and the completion."""


def score(task: Task, texts: list[str], examples: list[Example], n: int, on_error: str = "raise") -> list[float]:
    """The task reward of each completion; completions i*n .. i*n+n-1 answer ``examples[i]``. A verifier that
    raises is one clear ``RewardError`` (``on_error="raise"``) or a logged 0 (``"zero"``)."""
    scores = []
    for i, text in enumerate(texts):
        ex = examples[i // n]
        try:
            value = task.reward(text, ex)
        except Exception as e:  # a verifier is user code: report which row broke it
            if on_error == "raise":
                raise RewardError(f"reward of task {getattr(task, 'name', task)!r} raised {type(e).__name__}: {e} "
                                  f"(example id={ex.id!r}, completion={text!r}); set task.reward_errors=zero "
                                  "to score such completions 0 instead") from e
            logger.warning("reward raised %r on example %r; scored 0", e, ex.id)
            value = 0.0
        scores.append(0.0 if value is None else float(value))
    return scores
