"""Multi-term addition (optionally subtraction) with a short worked solution: "12+34+56=" → "46+56=102".

The solution folds the first two terms at each step, so a tiny model learns a chain of two-number sums instead
of one long mental sum. The verifier reads only the final number (after the last "="): outcome reward, exact.
"""

from __future__ import annotations

import random

from sfpo.tasks.base import Example
from sfpo.tasks.procedural import generate_split, parse_int

__all__ = ["ArithmeticTask"]


class ArithmeticTask:
    """``terms`` numbers of up to ``digits`` digits joined by operators drawn from ``ops`` ("+", or "+-" to mix in
    subtraction; running totals may then go negative, e.g. "12-34+5=" → "-22+5=-17"); ``seed`` selects the
    problem draw. Difficulty grows with ``terms`` (solution steps) and ``digits`` (carries)."""

    name = "arithmetic"

    def __init__(self, terms: int = 3, digits: int = 2, ops: str = "+", seed: int = 0) -> None:
        if terms < 2 or not 1 <= digits <= 6:
            raise ValueError(f"arithmetic needs terms >= 2 and 1 <= digits <= 6, got terms={terms}, digits={digits}")
        if not ops or set(ops) - set("+-"):
            raise ValueError(f"arithmetic ops must be a non-empty string over '+-', got {ops!r}")
        self.terms, self.digits, self.ops, self.seed = terms, digits, "".join(sorted(set(ops))), seed

    def _draw(self, rng: random.Random) -> Example:
        nums = [rng.randrange(10 ** self.digits) for _ in range(self.terms)]
        # the op list is drawn only when there is a choice, so "+" problems match those of earlier versions
        ops = [rng.choice(self.ops) if len(self.ops) > 1 else self.ops for _ in nums[1:]]
        prompt = str(nums[0]) + "".join(f"{op}{x}" for op, x in zip(ops, nums[1:])) + "="
        steps, acc = [], nums[0]
        for i, (op, x) in enumerate(zip(ops, nums[1:])):
            acc = acc + x if op == "+" else acc - x
            steps.append(str(acc) + "".join(f"{o}{y}" for o, y in zip(ops[i + 1:], nums[i + 2:])))
        return Example(prompt, str(acc), "=".join(steps))

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        # "+" keeps its original name: the name seeds the draw, so the default problems stay where they were
        name = f"arithmetic{self.terms}x{self.digits}" + ("" if self.ops == "+" else self.ops)
        return generate_split(name, split, n, self.seed, self._draw)

    def reward(self, completion: str, example: Example) -> float:
        if not isinstance(completion, str):
            return 0.0
        value = parse_int(completion.rsplit("=", 1)[-1])
        return float(value is not None and str(value) == example.answer)
