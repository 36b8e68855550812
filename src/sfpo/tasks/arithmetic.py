"""Multi-term addition with a short worked solution: "12+34+56=" → "46+56=102".

The solution folds the first two terms at each step, so a tiny model learns a chain of two-number sums instead
of one long mental sum. The verifier reads only the final number (after the last "="): outcome reward, exact.
"""

from __future__ import annotations

import random

from sfpo.tasks.base import Example
from sfpo.tasks.procedural import generate_split, parse_int

__all__ = ["ArithmeticTask"]


class ArithmeticTask:
    """Sum of ``terms`` numbers of up to ``digits`` digits; ``seed`` selects the problem draw."""

    name = "arithmetic"

    def __init__(self, terms: int = 3, digits: int = 2, seed: int = 0) -> None:
        if terms < 2 or not 1 <= digits <= 6:
            raise ValueError(f"arithmetic needs terms >= 2 and 1 <= digits <= 6, got terms={terms}, digits={digits}")
        self.terms, self.digits, self.seed = terms, digits, seed

    def _draw(self, rng: random.Random) -> Example:
        nums = [rng.randrange(10 ** self.digits) for _ in range(self.terms)]
        prompt = "+".join(map(str, nums)) + "="
        steps, acc = [], nums[0]
        for i in range(1, len(nums)):
            acc += nums[i]
            steps.append("+".join(map(str, [acc, *nums[i + 1:]])) if i < len(nums) - 1 else str(acc))
        return Example(prompt, str(acc), "=".join(steps))

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        return generate_split(f"arithmetic{self.terms}x{self.digits}", split, n, self.seed, self._draw)

    def reward(self, completion: str, example: Example) -> float:
        value = parse_int(completion.rsplit("=", 1)[-1])
        return float(value is not None and str(value) == example.answer)
