"""The multiplication task: worked solutions are correct arithmetic ending at the answer, splits are disjoint
and large enough for the harness's evaluation, and the verifier reads only the final number."""

import re

import pytest

from sfpo.tasks import get_task
from sfpo.testbed import CHARS


@pytest.mark.parametrize("digits", [2, 3, 4])
def test_worked_solutions_are_correct_and_end_at_the_answer(digits):
    task = get_task("multiplication", digits=digits)
    for ex in task.examples("train", 200):
        a, b = (int(x) for x in ex.prompt.rstrip("=").split("*"))
        assert len(str(a)) == digits and 2 <= b <= 9 and ex.answer == str(a * b)
        for step in ex.solution.split(","):
            x, op, y, z = re.fullmatch(r"(\d+)([*+])(\d+)=(\d+)", step).groups()
            assert (int(x) * int(y) if op == "*" else int(x) + int(y)) == int(z), step
        assert ex.solution.rsplit("=", 1)[-1] == ex.answer
        assert set(ex.prompt + ex.solution) <= set(CHARS)
        assert task.reward(ex.solution, ex) == 1.0
        assert task.reward(ex.solution + "1", ex) == 0.0


def test_splits_are_disjoint_and_cover_the_harness():
    task = get_task("multiplication")
    splits = {s: {ex.prompt for ex in task.examples(s)} for s in ("train", "validation", "test")}
    assert not (splits["train"] & splits["validation"]) and not (splits["train"] & splits["test"])
    assert len(splits["validation"]) >= 256 and len(splits["test"]) >= 512  # configs/reproduce.yaml's eval sizes
    ex = task.examples("test", 1)[0]
    assert task.reward("1+1=" + ex.answer, ex) == 1.0 and task.reward("", ex) == 0.0  # only the final number counts
    assert task.reward(None, ex) == 0.0
    with pytest.raises(ValueError, match="2 <= digits <= 5"):
        get_task("multiplication", digits=1)
