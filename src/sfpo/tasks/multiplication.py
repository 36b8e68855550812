"""Long multiplication by a one-digit number, worked digit by digit: "47*6=" → "40*6=240,7*6=42,240+42=282".

Added as the testbed task nobody tuned the warm-start or the RL settings on (the reproduction harness runs every
method on it at the learning rates chosen on arithmetic). The solution multiplies each place of the first number
(largest first), then folds the partial products left to right; the verifier reads only the final number (after
the last "="): outcome reward, exact.
"""

from __future__ import annotations

import random

from sfpo.tasks.base import Example
from sfpo.tasks.procedural import generate_split, parse_int

__all__ = ["MultiplicationTask"]


class MultiplicationTask:
    """A ``digits``-digit number (no leading zero) times a one-digit number in 2..9; ``seed`` selects the draw.
    Difficulty grows with ``digits`` (more partial products to fold)."""

    name = "multiplication"

    def __init__(self, digits: int = 3, seed: int = 0) -> None:
        if not 2 <= digits <= 5:
            raise ValueError(f"multiplication needs 2 <= digits <= 5, got {digits}")
        self.digits, self.seed = digits, seed

    def _draw(self, rng: random.Random) -> Example:
        a, b = rng.randrange(10 ** (self.digits - 1), 10 ** self.digits), rng.randrange(2, 10)
        places = [int(d) * 10 ** i for i, d in enumerate(reversed(str(a))) if d != "0"][::-1]
        steps = [f"{p}*{b}={p * b}" for p in places]
        acc = places[0] * b
        for p in places[1:]:
            steps.append(f"{acc}+{p * b}={acc + p * b}")
            acc += p * b
        return Example(f"{a}*{b}=", str(a * b), ",".join(steps))

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        # 3 digits give 900 × 8 = 7200 distinct problems, split 80/10/10 by hash: ask for a little less than
        # each split holds (validation and test then still cover the harness's 256 and 512 prompts)
        distinct = 9 * 10 ** (self.digits - 1) * 8
        sizes = {"train": min(20000, int(0.7 * distinct)), "validation": min(1000, int(0.08 * distinct)),
                 "test": min(1000, int(0.08 * distinct))}
        return generate_split(f"multiplication{self.digits}", split, n, self.seed, self._draw, sizes=sizes)

    def reward(self, completion: str, example: Example) -> float:
        if not isinstance(completion, str):
            return 0.0
        value = parse_int(completion.rsplit("=", 1)[-1])
        return float(value is not None and str(value) == example.answer)
