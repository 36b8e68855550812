"""Answer extraction tables: what counts as the answer, before any comparison."""

from fractions import Fraction

import pytest

from sfpo.rewards import (completion_text, extract_all_boxed, extract_boxed, extract_gsm8k, gold_answer,
                          parse_number)


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{42}", "42"),
    (r"\boxed{1} then \boxed{2}", "2"),                        # the last box counts: earlier ones are drafts
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),                 # nested braces stay whole
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),                       # escaped braces are literal, not groups
    (r"\boxed{\text{(C)}}", r"\text{(C)}"),
    (r"\boxed { 7 }", "7"),                                   # a space before the brace is still a box
    (r"\boxed{12.}", "12"),                                   # a sentence-final period is punctuation
    (r"\boxed{1.5}", "1.5"),
    (r"\fbox{3}", "3"),
    (r"\boxed{3", None),                                      # truncated: no closed box
    (r"\boxed{1} and then \boxed{2", "1"),                    # an unclosed last box does not hide a closed one
    (r"\boxed{}", None),                                      # empty box: no answer
    (r"\boxed{  }", None),
    ("the answer is 3", None),
    (r"\boxed 3", None),                                      # brace-less form is not supported (documented)
    (r"\boxedx{3}", None),                                    # another command
    ("", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_all_boxed_keeps_order_and_empties():
    assert extract_all_boxed(r"\boxed{1} x \boxed{} y \boxed{\frac{a}{b}}") == ["1", "", r"\frac{a}{b}"]


@pytest.mark.parametrize("text, expected", [
    ("so 3 + 4 = 7\n#### 7", "7"),
    ("#### 1,234", "1,234"),
    ("#### $1,234.50", "1,234.50"),
    ("#### -5", "-5"),
    ("#### −5", "−5"),                                        # Unicode minus
    ("#### 72.", "72"),                                       # trailing period dropped
    ("#### 18 dollars", "18"),
    ("#### 1 then #### 2", "2"),                              # last marker counts
    ("#### .5", ".5"),
    ("no marker 42", None),
    ("#### none", None),
])
def test_extract_gsm8k(text, expected):
    assert extract_gsm8k(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("1,234", Fraction(1234)), ("$1,234.50", Fraction(2469, 2)), ("−3", Fraction(-3)), ("72.", Fraction(72)),
    ("50%", Fraction(50)), ("0.5", Fraction(1, 2)), ("1{,}000", Fraction(1000)), (r"\$18", Fraction(18)),
    ("+4", Fraction(4)), ("18 dollars", Fraction(18)), ("abc", None), (None, None), ("9" * 60, None),
])
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize("value, expected", [
    (r"We get $x=\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),     # MATH solution: its last box
    ("3 + 4 = <<3+4=7>>7\n#### 1,007", "1007"),               # GSM8K answer column
    ({"ground_truth": "34", "style": "rule"}, "34"),          # verl/DAPO reward_model
    (["3", r"\frac{1}{2}"], r"3, \frac{1}{2}"),               # OlympiadBench final_answer list
    (["$5$"], "5"), (r"$\frac{1}{2}$", r"\frac{1}{2}"), ("$5", "$5"),
    (17, "17"), (17.0, "17"), (2.5, "2.5"), (True, None),
    ("  42 ", "42"), ("", None), (None, None), ([], None),
])
def test_gold_answer(value, expected):
    assert gold_answer(value) == expected


@pytest.mark.parametrize("completion, expected", [
    ("plain", "plain"),
    ([{"role": "assistant", "content": "chat"}], "chat"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"}], "a1"),
    ([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}], "xy"),
    ({"role": "assistant", "content": "one"}, "one"),
    ([], ""), (None, ""),
])
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected
