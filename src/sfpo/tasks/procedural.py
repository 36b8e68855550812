"""Shared machinery of the procedural tasks: seeded generation into disjoint train/validation/test splits.

A problem belongs to exactly one split, decided by a hash of its canonical text (not by the draw order), so
changing ``n`` never moves a problem between splits. Nothing here knows a task's format or verifier.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Callable

from sfpo.tasks.base import SPLITS, Example

__all__ = ["split_of", "generate_split", "parse_int"]

# a problem's split by its hash: 10% test, 10% validation, 80% train
_SPLIT_BUCKETS = {0: "test", 1: "validation"}
DEFAULT_SIZES = {"train": 20000, "validation": 1000, "test": 1000}


def split_of(key: str) -> str:
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10
    return _SPLIT_BUCKETS.get(bucket, "train")


def generate_split(name: str, split: str, n: int | None, seed: int,
                   draw: Callable[[random.Random], Example], sizes: dict[str, int] | None = None) -> list[Example]:
    """The first ``n`` distinct problems of ``split`` drawn by ``draw`` from a generator seeded by (seed, split);
    ``n=None`` takes the split's default size (``sizes`` or DEFAULT_SIZES)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
    n = (sizes or DEFAULT_SIZES)[split] if n is None else n
    rng = random.Random(f"{name}/{seed}/{split}")
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 10_000:
            raise ValueError(f"task {name!r}: could only find {len(out)} distinct {split} problems of {n} asked; "
                             "make the task harder (more digits or numbers) or ask for fewer")
        ex = draw(rng)
        if ex.prompt in seen or split_of(ex.prompt) != split:
            continue
        seen.add(ex.prompt)
        out.append(Example(ex.prompt, ex.answer, ex.solution, id=f"{name}-{split}-{len(out)}", meta=ex.meta))
    return out


# ASCII digits only: str.isdigit() also accepts "²", which int() then rejects with an exception
_INT = re.compile(r"-?[0-9]{1,12}")


def parse_int(text: str) -> int | None:
    """An optionally signed decimal integer of at most 12 ASCII digits (surrounding whitespace ignored), or None;
    never raises."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else None
