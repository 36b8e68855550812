"""What the trainer and the evaluator need from a task: prompts with gold answers, and an exact verifier.

A task is a deterministic, seeded source of ``Example``s split into disjoint train/validation/test sets, plus a
``reward`` that scores one completion. Tasks know nothing about models, tokenizers or training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Example", "Task", "SPLITS"]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    prompt: str
    """The text the policy continues (already templated)."""
    answer: str
    """The gold final answer the verifier compares against."""
    solution: str = ""
    """A correct worked completion (what follows ``prompt``), used for the supervised warm-start; may be empty."""
    id: str = ""
    """A stable identifier, reported when something about the row goes wrong."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """Task-specific fields the verifier needs (e.g. the numbers a countdown answer must use)."""


@runtime_checkable
class Task(Protocol):
    name: str

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        """The first ``n`` examples of ``split`` (all if None); the same list for the same task config."""
        ...

    def reward(self, completion: str, example: Example) -> float:
        """Score one completion (the text after the prompt, stop token removed); 1.0 = correct."""
        ...
