"""Answer extraction: the last ``\\boxed{}`` of a completion, GSM8K's ``#### n`` line, and plain numbers.

Pure string functions with no dependencies; they decide *what* the answer is, never whether it is right
(comparison lives in ``sfpo.rewards.verifier`` and ``sfpo.rewards.accuracy``). Nothing here raises on model
output: an answer that cannot be found is ``None``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

__all__ = ["completion_text", "extract_boxed", "extract_all_boxed", "extract_gsm8k", "gold_answer", "parse_number",
           "is_plain_number", "is_unevaluated_expression"]

# \boxed and \fbox both mean "this is the answer" in MATH-style solutions.
_BOX_COMMANDS = ("\\boxed", "\\fbox")
# A number as models write it: optional sign, thousands groups of exactly three digits, optional decimals.
# Unicode minus (U+2212) appears in copied text; "−5" must read as -5.
_NUMBER = re.compile(r"[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−+]?\.\d+")
# Numbers longer than this are not GSM8K answers; refusing them bounds the cost of Fraction() on junk.
_MAX_NUMBER_CHARS = 40


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL passes it: a string, or a list of chat messages whose last
    assistant message is the completion (its ``content`` may be a string or a list of ``{"type": "text"}``
    parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        if not assistant:
            return ""
        content = assistant[-1].get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    return ""


def _box_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the content of every balanced ``\\boxed{...}`` / ``\\fbox{...}``, in order.

    Braces are counted so nested groups (``\\boxed{\\frac{1}{2}}``) stay whole; ``\\{`` and ``\\}`` are escaped
    literal braces (sets) and do not count. An unclosed box (a truncated completion) is no box.
    """
    spans = []
    i = 0
    while True:
        starts = [(j, cmd) for cmd in _BOX_COMMANDS if (j := text.find(cmd, i)) >= 0]
        if not starts:
            return spans
        j, cmd = min(starts)
        k = j + len(cmd)
        # "\boxedfoo" is another command; only "\boxed{" and "\boxed {" open a box
        while k < len(text) and text[k] == " ":
            k += 1
        if k >= len(text) or text[k] != "{":
            i = j + len(cmd)
            continue
        depth, m = 0, k
        while m < len(text):
            c = text[m]
            if c == "\\":
                m += 2  # an escaped character, \{ and \} included
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            m += 1
        if depth != 0 or m >= len(text):
            return spans
        spans.append((k + 1, m))
        i = m + 1


def _clean(answer: str) -> str:
    # A sentence-final period inside the box ("\boxed{12.}") is punctuation, not part of the answer, and makes
    # math-verify fail to parse an otherwise correct number.
    answer = answer.strip()
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].rstrip()
    # "$\frac{1}{2}$" (OlympiadBench golds, some boxes): inline-math delimiters are not part of the answer;
    # "\$5" (money) is left alone
    if len(answer) > 1 and answer[0] == "$" and answer[-1] == "$" and answer[-2] != "\\":
        answer = answer.strip("$").strip()
    return answer


def extract_all_boxed(text: str) -> list[str]:
    """The contents of every balanced box, in order of appearance, stripped (empty boxes included)."""
    return [_clean(text[a:b]) for a, b in _box_spans(text)]


def extract_boxed(text: str) -> str | None:
    """The content of the LAST balanced ``\\boxed{}`` (or ``\\fbox{}``) in ``text``, stripped, or None when there
    is none or it is empty. The last box counts because models revise: an earlier box is a draft."""
    spans = _box_spans(text)
    if not spans:
        return None
    a, b = spans[-1]
    return _clean(text[a:b]) or None


def extract_gsm8k(text: str) -> str | None:
    """The first number after the LAST ``####`` (GSM8K's answer marker), as written, or None."""
    idx = text.rfind("####")
    if idx < 0:
        return None
    tail = text[idx + 4:].replace("{,}", ",").replace("\\$", "$")
    match = _NUMBER.search(tail)
    return match.group(0) if match else None


def parse_number(text: str | None) -> Fraction | None:
    """The first number in ``text`` as an exact Fraction: "$1,234.50" → 2469/2, "−3" → -3, "72." → 72,
    "50%" → 50 (GSM8K golds for percentage questions are the bare number). None when there is no number."""
    if text is None:
        return None
    text = text.replace("{,}", ",").replace("\\!", "")
    match = _NUMBER.search(text)
    if match is None or len(match.group(0)) > _MAX_NUMBER_CHARS:
        return None
    token = match.group(0).replace(",", "").replace("−", "-")
    return Fraction(token)


def gold_answer(value: Any) -> str | None:
    """The final answer inside a dataset's gold field: the last box of a worked solution (MATH), the number after
    ``####`` (GSM8K), ``ground_truth`` of a verl-style ``reward_model`` dict (DAPO), several answers joined by ", "
    (OlympiadBench's list), or the stripped value itself. None when there is nothing usable."""
    if value is None:
        return None
    if isinstance(value, dict):
        return gold_answer(value.get("ground_truth"))
    if isinstance(value, (list, tuple)):
        parts = [p for p in (gold_answer(v) for v in value) if p]
        return ", ".join(parts) if parts else None
    if isinstance(value, bool):  # a bool is an int to Python but never a math answer
        return None
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        return None
    if any(cmd in value for cmd in _BOX_COMMANDS):
        return extract_boxed(value)
    if "####" in value:
        number = extract_gsm8k(value)
        return number.replace(",", "").replace("−", "-") if number else None
    return _clean(value) or None


# ------------------------------------------------------------------------- numbers versus unevaluated arithmetic
# Decoration that does not change a number's value: units and words in \text{}, $, %, degree signs, thin spaces.
_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DECORATION = re.compile(r"\\[$%,!;: ]|\^\s*\{?\\circ\}?|°|\\left|\\right|\\displaystyle|[$%\s]")
_SOLVED_VARIABLE = re.compile(r"^[A-Za-z]\s*=\s*")  # "x = 16"
_LITERAL = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+")
_FRACTION = re.compile(r"([-+−]?)(?:\\[dt]?frac\{(\d+)\}\{(\d+)\}|\\[dt]?frac(\d)(\d)|(\d+)/(\d+))")
_WORDS = re.compile(r"(?<![\\A-Za-z])[A-Za-z]+")  # unit words ("cm", "dollars"); a \command is not a word


def _bare(text: str) -> str:
    text = _SOLVED_VARIABLE.sub("", text.strip()).replace("{,}", ",")
    for _ in range(3):  # \textbf{\text{7}}: unwrap nested wrappers
        text = _WRAPPERS.sub(r"\1", text)
    text = _WORDS.sub("", _DECORATION.sub("", text)).rstrip(".")
    while len(text) > 2 and text[0] + text[-1] in ("()", "{}"):  # "(16)", "{16}": grouping, not arithmetic
        text = text[1:-1]
    return text


def is_plain_number(text: str) -> bool:
    """True when ``text`` is one number literal (``-16``, ``1,000``, ``0.5``, ``50\\%``, ``30^\\circ``,
    ``5\\text{ cm}``): a gold answer of this form asks for a value, not for an expression."""
    return bool(_LITERAL.fullmatch(_bare(text)))


def is_unevaluated_expression(text: str) -> bool:
    """True when an answer is arithmetic still to be done (``-2 \\times 8``, ``75 + -60``, ``\\frac{32}{2}``,
    ``\\sqrt{256}``, ``2^4``) rather than a number: anything but one literal or one fraction in lowest terms
    (``\\frac{1}{2}``, ``-3/4``), once units, ``$``, ``%``, degree signs and "x =" are stripped. Scientific
    notation (``1.6 \\times 10^{1}``) counts as unevaluated too."""
    bare = _bare(text)
    if _LITERAL.fullmatch(bare):
        return False
    frac = _FRACTION.fullmatch(bare)
    if frac:
        a, b = [int(x) for x in frac.groups()[1:] if x is not None]
        return b <= 1 or math.gcd(a, b) != 1
    return True
