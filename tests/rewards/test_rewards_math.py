"""Reward regression tables from real failure modes, and calls with TRL's reward-function signature.

Each row is (gold, completion, expected). The expected values are the behaviour this project decided on; the
comment on a row says why when it is not obvious. Comparison runs through the math-verify worker process.
"""

import logging

import pytest

from sfpo.rewards import (REWARDS, boxed_format_reward, get_reward, gsm8k_accuracy_reward, math_accuracy_reward,
                          sfpo_math_reward, think_format_reward)


def B(answer: str) -> str:
    return "Reasoning... so the answer is \\boxed{" + answer + "}."


MATH_TABLE = [
    # LaTeX fractions: every spelling of one half is one half
    (r"\frac{1}{2}", B(r"\frac{1}{2}"), 1.0),
    (r"\frac{1}{2}", B("0.5"), 1.0),
    (r"\frac{1}{2}", B(r"\dfrac12"), 1.0),
    (r"\frac{1}{2}", B("1/2"), 1.0),
    (r"\frac{1}{2}", B(r"\frac{2}{4}"), 1.0),
    ("0.5", B(r"\frac{1}{2}"), 1.0),
    (r"\frac{1}{3}", B("0.33"), 0.0),                     # a rounded decimal is wrong ...
    (r"\frac{1}{3}", B("0.333333"), 1.0),                 # ... unless right to math-verify's 6 places
    # units are ignored when math-verify knows them; other words are not
    ("5", B("5 cm"), 1.0),
    ("5", B(r"5\text{ cm}"), 1.0),
    ("5", B(r"5\,\mathrm{cm}"), 1.0),
    (r"5\text{ cm}", B("5"), 1.0),
    ("5", B("5 dollars"), 0.0),                           # not a known unit: the box holds more than the number
    ("5", B(r"\$5"), 1.0),
    # \text{}
    (r"\text{Evelyn}", B("Evelyn"), 1.0),
    (r"\text{(C)}", B("C"), 1.0),
    (r"\text{(C)}", B(r"\text{(C)}"), 1.0),
    (r"\text{(C)}", B("D"), 0.0),
    ("7", B(r"\textbf{7}"), 1.0),
    # multiple boxes: the last one counts
    ("3", r"first \boxed{2}, no wait: \boxed{3}", 1.0),
    ("3", r"\boxed{3}, no wait: \boxed{2}", 0.0),
    # no box, empty box, unclosed box
    ("3", "the answer is 3", 0.0),
    ("3", r"\boxed{}", 0.0),
    ("3", r"\boxed{3", 0.0),
    ("3", r"\boxed 3", 0.0),                              # brace-less form: not a box (documented)
    ("3", r"\fbox{3}", 1.0),
    # nested braces
    (r"\frac{\sqrt{3}}{2}", B(r"\frac{\sqrt{3}}{2}"), 1.0),
    (r"\{1,2\}", B(r"\{1, 2\}"), 1.0),
    (r"\left( 3, \frac{\pi}{2} \right)", B(r"(3,\frac{\pi}{2})"), 1.0),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", B(r"\begin{pmatrix}1\\2\end{pmatrix}"), 1.0),
    # thousands separators: comma and {,} yes, a space no (it reads as a product)
    ("1000", B("1,000"), 1.0),
    ("1000", B("1{,}000"), 1.0),
    ("1000000", B("1,000,000"), 1.0),
    ("1,000", B("1000"), 1.0),
    ("1000", B("1 000"), 0.0),
    # percentages: math-verify accepts 50% for both 50 and 0.5 (kept: the gold rarely says which is meant),
    # but a bare 0.5 is not 50
    (r"50\%", B("50"), 1.0),
    ("50", B(r"50\%"), 1.0),
    ("50", B("50%"), 1.0),
    ("0.5", B(r"50\%"), 1.0),
    ("50", B("0.5"), 0.0),
    # intervals: endpoints and openness must match; an inequality is not an interval
    ("[1,2)", B("[1, 2)"), 1.0),
    ("(1,2)", B("[1,2]"), 0.0),
    (r"(-\infty, 3]", B(r"(-\infty,3]"), 1.0),
    (r"(-\infty,3]", B(r"x \le 3"), 0.0),
    # degree signs are dropped, Unicode ° included; degrees are not converted to radians
    ("30", B(r"30^\circ"), 1.0),
    ("30", B(r"30^{\circ}"), 1.0),
    (r"30^\circ", B("30"), 1.0),
    ("30", B("30°"), 1.0),
    (r"\frac{\pi}{6}", B(r"30^\circ"), 0.0),
    # punctuation, signs, equivalent forms
    ("12", B("12."), 1.0),
    ("12", r"\boxed{12}.", 1.0),
    ("-3", B("-3"), 1.0),
    ("-3", B("3"), 0.0),
    ("10", B("10.0"), 1.0),
    ("2", B("x=2"), 1.0),                                 # math-verify reads the value of a solved variable
    ("x^2+1", B("1+x^2"), 1.0),
    (r"2\sqrt{2}", B(r"\sqrt{8}"), 1.0),
    (r"\pi", B("3.14"), 0.0),
    ("1,2", B("2,1"), 1.0),                               # a bare list is a set: order ignored ...
    ("(1,2)", B("(2,1)"), 0.0),                           # ... a tuple is ordered
    (r"$\frac{1}{2}$", B("0.5"), 1.0),                    # $-delimited gold (OlympiadBench)
]


@pytest.mark.parametrize("gold, completion, expected", MATH_TABLE)
def test_math_accuracy_table(gold, completion, expected, verifier):
    assert math_accuracy_reward([completion], answer=[gold], verifier=verifier) == [expected]


@pytest.mark.parametrize("gold, completion, expected", MATH_TABLE)
def test_sfpo_reward_table(gold, completion, expected, verifier):
    """The paper's reward on the same table: 1.0 right, 0.1 for a wrong non-empty box, 0.0 without one."""
    from sfpo.rewards import extract_boxed

    boxed = extract_boxed(completion) is not None
    want = 1.0 if expected == 1.0 else (0.1 if boxed else 0.0)
    assert sfpo_math_reward([completion], answer=[gold], verifier=verifier) == [want]


def test_sfpo_wrong_box_value_is_an_option(verifier):
    assert sfpo_math_reward([B("4"), "4", B("3")], answer=["3"] * 3, wrong_box=0.0, verifier=verifier) == [0.0, 0.0,
                                                                                                          1.0]


def test_trl_signature_strings_chat_and_extra_kwargs(verifier):
    completions = [
        B("3"),
        [{"role": "assistant", "content": B("3")}],
        [{"role": "assistant", "content": B("4")}],
        [{"role": "assistant", "content": "no box"}],
    ]
    extra = dict(prompts=["p"] * 4, completion_ids=[[1, 2]] * 4, trainer_state=object(), level=["Level 5"] * 4)
    assert math_accuracy_reward(completions, answer=["3"] * 4, verifier=verifier, **extra) == [1.0, 1.0, 0.0, 0.0]
    assert sfpo_math_reward(completions, answer=["3"] * 4, verifier=verifier, **extra) == [1.0, 1.0, 0.1, 0.0]
    # exactly as GRPOTrainer calls a reward: everything by keyword, the name read from __name__
    for name in REWARDS:
        fn = get_reward(name)
        assert isinstance(fn.__name__, str)
        out = fn(prompts=["p"] * 4, completions=completions, completion_ids=[[1]] * 4, answer=["3"] * 4,
                 trainer_state=None, log_extra=lambda *a: None, log_metric=lambda *a: None)
        assert len(out) == 4 and all(isinstance(r, float) for r in out)


@pytest.mark.parametrize("column, gold", [
    ("answer", "3"),
    ("solution", r"Adding, we get $\boxed{3}$."),             # MATH-style worked solution: its last box
    ("solution", "1 + 2 = <<1+2=3>>3\n#### 3"),               # GSM8K-style
    ("ground_truth", "3"),
    ("reward_model", {"ground_truth": "3", "style": "rule"}),  # verl/DAPO
])
def test_gold_column_variants(column, gold, verifier):
    assert math_accuracy_reward([B("3"), B("2")], **{column: [gold, gold]}, verifier=verifier) == [1.0, 0.0]


def test_unusable_gold_is_none_and_logged_once(verifier, caplog):
    with caplog.at_level(logging.WARNING, logger="sfpo.rewards.accuracy"):
        out = math_accuracy_reward([B("3"), B("3")], answer=[None, None], verifier=verifier)
    assert out == [None, None]
    assert sum("cannot be parsed" in r.message for r in caplog.records) == 1


def test_missing_gold_column_is_one_clear_error():
    with pytest.raises(ValueError, match=r"needs the gold answers as one of the columns.*got only \['prompts'\]"):
        math_accuracy_reward([B("3")], prompts=["p"])
    with pytest.raises(ValueError, match="2 completions but 1 values in 'answer'"):
        math_accuracy_reward([B("3"), B("3")], answer=["3"])
    with pytest.raises(ValueError, match="must be a list"):
        math_accuracy_reward([B("3")], answer="3")


def test_trl_log_hooks_receive_extracted_answers_and_timeouts(verifier):
    logged, metrics = {}, {}
    math_accuracy_reward([B("3"), "none"], answer=["3", "4"], verifier=verifier,
                         log_extra=logged.__setitem__, log_metric=metrics.__setitem__)
    assert logged == {"gold_answer": ["3", "4"], "boxed_answer": ["3", None]}
    assert metrics == {"verifier_timeout_frac": 0.0}


GSM8K_TABLE = [
    ("#### 72", "so 72\n#### 72", 1.0),
    ("#### 1,234", "#### 1234", 1.0),                          # thousands separators either side
    ("#### 1234", "#### 1,234", 1.0),
    ("#### 5", "#### $5", 1.0),                                # dollar sign
    ("#### 5", r"#### \$5", 1.0),
    ("#### 72", "#### 72.", 1.0),                              # trailing period
    ("#### 18", "#### 18.00", 1.0),                            # decimals compared as numbers
    ("#### 2.5", "#### 2.50", 1.0),
    ("#### 2.5", "#### 2.4", 0.0),
    ("#### -3", "#### -3", 1.0),                               # negatives, Unicode minus
    ("#### -3", "#### −3", 1.0),
    ("#### -3", "#### 3", 0.0),
    ("#### 50", "#### 50%", 1.0),                              # GSM8K percentage golds are the bare number
    ("#### 18", "#### 18 dollars", 1.0),
    ("#### 3", "#### 2\nwait\n#### 3", 1.0),                   # last marker counts
    ("#### 72", r"so the answer is \boxed{72}", 1.0),          # boxed answers count (our prompt asks for them)
    ("#### 1000", r"\boxed{\$1{,}000}", 1.0),
    ("#### 72", "the answer is 72", 0.0),                      # a number in passing is not an answer
    ("#### 72", "#### seventy-two", 0.0),
    ("72", "#### 72", 1.0),                                    # a bare-number gold column works too
]


@pytest.mark.parametrize("gold, completion, expected", GSM8K_TABLE)
def test_gsm8k_table(gold, completion, expected):
    assert gsm8k_accuracy_reward([completion], answer=[gold]) == [expected]


def test_gsm8k_trl_signature_and_bad_gold(caplog):
    chat = [[{"role": "assistant", "content": "#### 4"}], [{"role": "assistant", "content": "#### 5"}]]
    assert gsm8k_accuracy_reward(chat, answer=["#### 4", "#### 4"], prompts=["p", "p"], trainer_state=None) == [1.0,
                                                                                                             0.0]
    with caplog.at_level(logging.WARNING):
        assert gsm8k_accuracy_reward(["#### 4"], answer=["#### four"]) == [None]


@pytest.mark.parametrize("completion, expected", [
    (r"work \boxed{3}", 1.0),
    (r"\boxed{\frac{1}{2}}", 1.0),
    (r"\boxed{1} or \boxed{2}", 0.0),     # hedging between answers
    (r"\boxed{}", 0.0),
    (r"\boxed{3", 0.0),                   # truncated
    ("3", 0.0),
    ([{"role": "assistant", "content": r"\boxed{3}"}], 1.0),
])
def test_boxed_format_table(completion, expected):
    assert boxed_format_reward([completion], prompts=["p"], answer=["3"]) == [expected]


@pytest.mark.parametrize("completion, expected", [
    ("<think>add them</think> The answer is \\boxed{3}.", 1.0),
    ("add them</think>\\boxed{3}", 1.0),                         # <think> opened by the chat template
    ("<think>add them</think> The answer is 3.", 0.0),          # no box after thinking
    ("<think></think>\\boxed{3}", 0.0),                          # empty reasoning
    ("<think>a</think><think>b</think>\\boxed{3}", 0.0),         # two think blocks
    ("<think>a \\boxed{3}", 0.0),                                 # never closed
    ("\\boxed{3}", 0.0),
    ("<think>a</think>\\boxed{1} \\boxed{2}", 0.0),
])
def test_think_format_table(completion, expected):
    assert think_format_reward([completion]) == [expected]


def test_registry():
    assert set(REWARDS) == {"math_accuracy", "sfpo_math", "gsm8k_accuracy", "boxed_format", "think_format"}
    assert get_reward("sfpo_math") is sfpo_math_reward
    with pytest.raises(ValueError, match=r"unknown reward 'acc'; known rewards: \['boxed_format'"):
        get_reward("acc")


# A numeric gold against a box of arithmetic still to be done: math-verify evaluates it and calls it equal, which
# paid a real TRL run for boxing the question's arithmetic. (gold, completion, plain math-verify, refused)
UNEVALUATED_TABLE = [
    ("-16", B(r"-2 \times 8"), 1.0, 0.0),                 # the two cases seen in training
    ("15", B("75 + -60"), 1.0, 0.0),
    ("16", B(r"2 \cdot 8"), 1.0, 0.0),
    ("16", B("2*8"), 1.0, 0.0),
    ("16", B("2^4"), 1.0, 0.0),
    ("16", B(r"\sqrt{256}"), 1.0, 0.0),
    ("16", B(r"\frac{32}{2}"), 1.0, 0.0),                 # an unreduced fraction is a division to do
    ("16", B("20-4"), 1.0, 0.0),
    ("0.5", B(r"\frac{2}{4}"), 1.0, 0.0),
    ("16", B(r"x = 2 \times 8"), 1.0, 0.0),
    ("16", B(r"2 \times 8 \text{ cm}"), 1.0, 0.0),
    # still right: the number itself, however decorated, and fractions in lowest terms
    ("-16", B("-16"), 1.0, 1.0),
    ("-16", B("−16"), 1.0, 1.0),
    ("16", B("x = 16"), 1.0, 1.0),
    ("16", B("(16)"), 1.0, 1.0),
    ("16", B(r"16\text{ cm}"), 1.0, 1.0),
    ("16", B(r"\$16"), 1.0, 1.0),
    ("1000", B("1,000"), 1.0, 1.0),
    ("0.5", B(r"\frac{1}{2}"), 1.0, 1.0),
    ("-0.75", B(r"-\frac{3}{4}"), 1.0, 1.0),
    ("30", B(r"30^\circ"), 1.0, 1.0),
    ("50", B(r"50\%"), 1.0, 1.0),
    # a gold that is itself an expression is compared as math-verify does: only numeric golds refuse
    (r"2\sqrt{2}", B(r"\sqrt{8}"), 1.0, 1.0),
    (r"\frac{1}{2}", B(r"\frac{2}{4}"), 1.0, 1.0),
    ("x^2+1", B("1+x^2"), 1.0, 1.0),
    # wrong stays wrong either way
    ("-16", B(r"-2 \times 9"), 0.0, 0.0),
]


@pytest.mark.parametrize("gold, completion, plain, refused", UNEVALUATED_TABLE)
def test_unevaluated_expression_against_numeric_gold(gold, completion, plain, refused, verifier):
    assert math_accuracy_reward([completion], answer=[gold], verifier=verifier, refuse_unevaluated=False) == [plain]
    assert math_accuracy_reward([completion], answer=[gold], verifier=verifier) == [refused]
    # the paper's reward: a refused box is a wrong box
    assert sfpo_math_reward([completion], answer=[gold], verifier=verifier) == [1.0 if refused else 0.1]


def test_math_task_refuses_by_default_and_can_reproduce_math_verify(tmp_path, verifier):
    import json

    from sfpo.tasks.math import MathTask

    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"problem": "What is -2 times 8?", "answer": "-16"}) + "\n")
    for refuse, want in ((True, 0.1), (False, 1.0)):
        task = MathTask(data_files={"test": str(f)}, reward="sfpo_math", refuse_unevaluated=refuse)
        task._verifier = verifier
        (ex,) = task.examples("test")
        assert task.reward(B(r"-2 \times 8"), ex) == want
