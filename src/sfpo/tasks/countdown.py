"""Countdown-style target reaching: "3,4,5:17=" → "3*4=12,12+5=17".

Combine the given numbers with + - * to reach the target, each given number used at most once and each
intermediate result at most once. The verifier parses the comma-separated steps itself (no eval), checks every
step's arithmetic and provenance, and rewards 1.0 when the last result equals the target.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from sfpo.tasks.base import Example
from sfpo.tasks.procedural import generate_split

__all__ = ["CountdownTask", "check_steps"]

# ASCII digits only (a regex \d also matches other scripts' digits); bounded lengths keep products small
_STEP = re.compile(r"([0-9]{1,6})([+\-*])([0-9]{1,6})=(-?[0-9]{1,12})")
_PROMPT = re.compile(r"([0-9,]+):")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def check_steps(completion: str, numbers: list[int], target: int) -> bool:
    """True when the comma-separated steps "a<op>b=c" are correct arithmetic, each operand is a given number or an
    earlier step's result not used before, and the last result is ``target``. Never raises."""
    if not isinstance(completion, str):
        return False
    pool = Counter(numbers)
    result = None
    steps = completion.strip().split(",")
    if len(steps) >= len(numbers):  # each step uses up two numbers and makes one: at most len(numbers)-1 steps
        return False
    for step in steps:
        m = _STEP.fullmatch(step.strip())
        if m is None:
            return False
        a, op, b, claimed = int(m[1]), m[2], int(m[3]), int(m[4])
        if _OPS[op](a, b) != claimed:
            return False
        for x in (a, b):  # each operand must come from the pool (given numbers or earlier results)
            if pool[x] <= 0:
                return False
            pool[x] -= 1
        pool[claimed] += 1
        result = claimed
    return result == target


class CountdownTask:
    """``count`` numbers in 1..``max_number``; the target is the value of a random expression using all of them."""

    name = "countdown"
    SIZES = {"train": 5000, "validation": 500, "test": 500}  # 3 numbers in 1..9 give ~9k distinct problems

    def __init__(self, count: int = 3, max_number: int = 9, seed: int = 0) -> None:
        if not 2 <= count <= 5 or max_number < 2:
            raise ValueError(f"countdown needs 2 <= count <= 5 and max_number >= 2, got {count}, {max_number}")
        self.count, self.max_number, self.seed = count, max_number, seed

    def _draw(self, rng: random.Random) -> Example:
        nums = [rng.randint(1, self.max_number) for _ in range(self.count)]
        order = nums[:]
        rng.shuffle(order)
        acc, steps = order[0], []
        for x in order[1:]:
            op = rng.choice("+-*")
            if op == "-" and x > acc:  # keep every intermediate non-negative: the step grammar has no signs
                op = "+"
            new = _OPS[op](acc, x)
            steps.append(f"{acc}{op}{x}={new}")
            acc = new
        prompt = ",".join(map(str, nums)) + f":{acc}="
        return Example(prompt, str(acc), ",".join(steps), meta={"numbers": nums, "target": acc})

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        return generate_split(f"countdown{self.count}x{self.max_number}", split, n, self.seed, self._draw,
                              sizes=self.SIZES)

    def reward(self, completion: str, example: Example) -> float:
        numbers = example.meta.get("numbers")
        if numbers is None:  # rebuilt from the prompt if the row came without meta (e.g. read from a file)
            m = _PROMPT.match(example.prompt)
            numbers = [int(x) for x in m[1].split(",") if x] if m else []
        return float(check_steps(completion, list(numbers), int(example.answer)))
