"""Procedural tasks: verifiers on (prompt, answer, completion, expected) tables, seeded disjoint splits,
registry errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # sfpo.tasks also registers the hub-backed math tasks
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from sfpo.tasks import get_task
from sfpo.tasks.base import Example
from sfpo.tasks.countdown import check_steps


@pytest.mark.parametrize("prompt, answer, completion, expected", [
    ("12+34+56=", "102", "46+56=102", 1.0),
    ("12+34+56=", "102", "102", 1.0),             # no working shown: only the final answer counts
    ("12+34+56=", "102", "46+56=101", 0.0),
    ("12+34+56=", "102", "46+56=1022", 0.0),
    ("12+34+56=", "102", "46+56=", 0.0),          # nothing after the last '='
    ("12+34+56=", "102", "", 0.0),
    ("12+34+56=", "102", "46+56=0102", 1.0),       # compared as integers: a leading zero is harmless
    ("12+34+56=", "102", "==+-*,: ", 0.0),
    ("1+2+3=", "6", "3+3=6 ", 1.0),               # trailing space stripped
    ("1+2+3=", "6", "3+3=-6", 0.0),
    ("1+2+3=", "6", "3+3=²", 0.0),                # str.isdigit() is True for "²" but int() rejects it
    ("1+2+3=", "6", "3+3=٦", 0.0),                # non-ASCII digits are not an answer
    ("1+2+3=", "6", "3+3=6=6", 1.0),
    ("1+2+3=", "6", "3+3=6\n7", 0.0),
    ("12-34+5=", "-17", "-22+5=-17", 1.0),
    ("12-34+5=", "-17", "-22+5=17", 0.0),
    ("12-34+5=", "-17", "-22+5=--17", 0.0),
    ("1+2=", "3", "9" * 40, 0.0),                  # absurdly long numbers are rejected, not parsed
])
def test_arithmetic_verifier(prompt, answer, completion, expected):
    task = get_task("arithmetic")
    assert task.reward(completion, Example(prompt, answer)) == expected


def _cd(nums, target):
    return Example(",".join(map(str, nums)) + f":{target}=", str(target), meta={"numbers": nums, "target": target})


@pytest.mark.parametrize("nums, target, completion, expected", [
    ([3, 4, 5], 17, "3*4=12,12+5=17", 1.0),
    ([3, 4, 5], 17, "4*3=12,5+12=17", 1.0),       # operand order free
    ([3, 4, 5], 17, "3*4=12,12+5=18", 0.0),       # wrong arithmetic
    ([3, 4, 5], 17, "3*4=12,12+5=17,", 0.0),      # trailing empty step
    ([3, 4, 5], 17, "3*4=12,12+4=16", 0.0),       # 4 used twice
    ([3, 4, 5], 12, "3*4=12", 1.0),               # not every number has to be used
    ([3, 4, 5], 17, "6*2=12,12+5=17", 0.0),       # numbers not given
    ([3, 4, 5], 17, "17", 0.0),                   # no steps
    ([5, 5, 1], 0, "5-5=0", 1.0),
    ([2, 9, 1], 7, "2-9=-7", 0.0),                 # result ≠ target
    ([3, 4, 5], 17, "3*4=12;12+5=17", 0.0),
    ([3, 4, 5], 17, "", 0.0),
    ([3, 4, 5], 17, "9999999*9999999=1", 0.0),
    ([3, 4, 5], 17, "3*4=12,12+5=17,17-0=17", 0.0),  # 0 was not given (and three steps are one too many)
    ([3, 4, 5], 7, "3+4=7", 1.0),
    ([3, 4, 5], -1, "4-5=-1", 1.0),               # a negative result may end the chain
    ([3, 4, 5], 1, "4-5=-1,-1+2=1", 0.0),         # but no step can use it
    ([3, 4, 5], 17, " 3*4=12 , 12+5=17 ", 1.0),   # spaces around steps are harmless
    ([3, 4, 5], 17, "3*4=12,12+5=17\n", 1.0),
    ([3, 4, 5], 17, "3*4=12,,12+5=17", 0.0),
    ([3, 4, 5], 17, "٣*4=12,12+5=17", 0.0),       # non-ASCII digits
    ([3, 4, 5], 17, "3*4=12,12+5=17=17", 0.0),
    ([3, 4, 5], 17, "3/4=0,12+5=17", 0.0),
])
def test_countdown_verifier(nums, target, completion, expected):
    task = get_task("countdown")
    assert task.reward(completion, _cd(nums, target)) == expected


def test_countdown_reward_without_meta_reads_the_prompt():
    task = get_task("countdown")
    assert task.reward("3*4=12,12+5=17", Example("3,4,5:17=", "17")) == 1.0
    assert task.reward("3*4=12,12+5=17", Example("garbage", "17")) == 0.0


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
@pytest.mark.parametrize("junk", [None, 17, b"3*4=12", ["1"]])
def test_rewards_of_non_text_are_zero(name, junk):
    task = get_task(name)
    assert task.reward(junk, task.examples("validation", 1)[0]) == 0.0


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_solutions_are_correct_and_splits_disjoint_and_deterministic(name):
    task = get_task(name)
    splits = {s: task.examples(s, 300) for s in ("train", "validation", "test")}
    for exs in splits.values():
        assert len({e.prompt for e in exs}) == len(exs) == 300
        assert all(task.reward(e.solution, e) == 1.0 for e in exs)
    prompts = [{e.prompt for e in exs} for exs in splits.values()]
    assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2]) and not (prompts[1] & prompts[2])
    assert get_task(name).examples("validation", 300) == splits["validation"]
    assert task.examples("validation", 100) == splits["validation"][:100]  # n never reshuffles a split
    assert get_task(name, seed=1).examples("validation", 50) != splits["validation"][:50]


def test_difficulty_knob():
    easy, hard = get_task("arithmetic", terms=2, digits=1), get_task("arithmetic", terms=4, digits=3)
    assert max(len(e.prompt) for e in easy.examples("train", 50)) <= 4
    assert all(e.prompt.count("+") == 3 for e in hard.examples("train", 50))
    assert all(len(e.meta["numbers"]) == 4 for e in get_task("countdown", count=4).examples("train", 20))
    mixed = get_task("arithmetic", ops="+-", terms=4).examples("train", 200)
    assert any("-" in e.prompt for e in mixed) and any(e.answer.startswith("-") for e in mixed)
    assert all(e.solution.count("=") == 2 for e in mixed)  # terms - 2 intermediate steps, then the total
    assert all(get_task("arithmetic", ops="+-", terms=4).reward(e.solution, e) == 1.0 for e in mixed)


def test_default_problems_and_lengths_are_pinned():
    """The default problems are what the cached warm-starts and reported numbers were made on: moving them is a
    deliberate change (bump testbed.FORMAT_VERSION)."""
    arith, count = get_task("arithmetic"), get_task("countdown")
    assert [(e.prompt, e.solution) for e in arith.examples("validation", 2)] == \
        [("24+24+15=", "48+15=63"), ("14+42+88=", "56+88=144")]
    assert count.examples("validation", 1)[0].prompt == "5,6,6:180="
    for task in (arith, count):  # responses stay short enough for 16-token rollouts (+ eos)
        assert max(len(e.solution) for e in task.examples("train")) <= 16


def test_registry_is_filled_at_import_and_extensible(monkeypatch):
    import sfpo.tasks as tasks

    assert {"arithmetic", "countdown"} <= set(tasks.TASKS)

    class Echo:
        name = "echo"

        def __init__(self, word: str = "hi"):
            self.word = word

    monkeypatch.setitem(tasks.TASKS, "echo", Echo)
    assert get_task("echo", word="yo").word == "yo"
    with pytest.raises(ValueError, match=r"task 'echo' has no option 'words'; its options: \['word'\]"):
        get_task("echo", words="yo")


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown task 'nope'; known tasks: \[.*'arithmetic'.*'countdown'"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"task 'arithmetic' has no option 'term'"):
        get_task("arithmetic", term=3)
    with pytest.raises(ValueError, match="unknown split"):
        get_task("arithmetic").examples("dev", 3)
    with pytest.raises(ValueError, match="ops must be"):
        get_task("arithmetic", ops="*")
    with pytest.raises(ValueError, match="could only find"):
        get_task("arithmetic", terms=2, digits=1).examples("train", 5000)


def test_check_steps_never_raises_on_garbage():
    for junk in ["", ",", "=", "1=1", "a+b=c", "1+1=2" * 50, "-1+2=1", "1//2=0", "1+2=3=3", "²+1=3", "1+2=3,"
                 * 1000, "9" * 10_000, "\x00", "1+2=3,3*0=0"]:
        assert check_steps(junk, [1, 2, 3], 3) is False
    assert check_steps("1+2=3", [], 3) is False
