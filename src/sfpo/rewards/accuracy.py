"""Outcome rewards for math: math-verify on the last ``\\boxed{}``, GSM8K's numeric check, the SFPO paper's 1/0.1/0.

Every function has TRL's reward signature ``fn(completions, **columns) -> list[float | None]`` so it can be
passed to ``GRPOTrainer(reward_funcs=...)`` unchanged: ``completions`` are strings or chat-message lists, the gold
answers arrive as a dataset column (``answer``, ``solution``, ``ground_truth`` or verl's ``reward_model``), and
anything else TRL passes (``prompts``, ``completion_ids``, ``trainer_state``, ...) is ignored. None means "this
row has no usable gold answer" (TRL then leaves the reward out). No partial credit beyond the paper's 0.1.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from sfpo.rewards.extract import (completion_text, extract_boxed, extract_gsm8k, gold_answer, is_plain_number,
                                  is_unevaluated_expression, parse_number)
from sfpo.rewards.verifier import MathVerifier, Verdict, default_verifier

__all__ = ["GOLD_COLUMNS", "math_accuracy_reward", "sfpo_math_reward", "gsm8k_accuracy_reward", "gold_answers",
           "refused_as_unevaluated"]

logger = logging.getLogger(__name__)

GOLD_COLUMNS = ("answer", "solution", "ground_truth", "reward_model")
"""Where a reward looks for the gold answer, first match wins: a final answer, a worked solution (its last box or
``####`` line), a bare ground truth, or verl's ``{"ground_truth": ...}`` dict (DAPO-Math-17K)."""

_warned_golds: set[str] = set()


def gold_answers(columns: dict[str, Any], n: int, reward: str) -> list[str | None]:
    """The final gold answer of each of ``n`` completions from the first gold column present in ``columns``."""
    for name in GOLD_COLUMNS:
        values = columns.get(name)
        if values is not None:
            if isinstance(values, (str, dict)) or not isinstance(values, Sequence):
                raise ValueError(f"reward {reward!r}: column {name!r} must be a list with one gold answer per "
                                 f"completion, got {type(values).__name__}")
            if len(values) != n:
                raise ValueError(f"reward {reward!r}: {n} completions but {len(values)} values in {name!r}")
            return [gold_answer(v) for v in values]
    raise ValueError(f"reward {reward!r} needs the gold answers as one of the columns {list(GOLD_COLUMNS)}; "
                     f"got only {sorted(columns)}")


def _warn_bad_gold(gold: Any, reward: str) -> None:
    # once per distinct gold: a bad row repeats for every completion of its group and every epoch
    key = repr(gold)[:300]
    if key not in _warned_golds and len(_warned_golds) < 10_000:
        _warned_golds.add(key)
        logger.warning("reward %r: gold answer %s cannot be parsed; reward None (row skipped)", reward, key)


def refused_as_unevaluated(gold: str, pred: str) -> bool:
    """A numeric gold answer (``-16``) against a box of arithmetic still to be done (``-2 \\times 8``): math-verify
    evaluates the expression and calls it equal, which pays a policy for boxing the question's arithmetic instead
    of solving it (seen in a real TRL run). Such a prediction is wrong whatever its value."""
    return is_plain_number(gold) and is_unevaluated_expression(pred)


def _verdicts(completions: list, columns: dict[str, Any], reward: str, verifier: MathVerifier | None,
              refuse_unevaluated: bool = True):
    """(gold, boxed prediction, verdict) per completion; no box is WRONG, a missing gold BAD_GOLD, and with
    ``refuse_unevaluated`` an unevaluated expression against a numeric gold WRONG without asking math-verify."""
    verifier = default_verifier() if verifier is None else verifier
    golds = gold_answers(columns, len(completions), reward)
    timeouts_before = verifier.timeouts
    out = []
    for completion, gold in zip(completions, golds):
        pred = extract_boxed(completion_text(completion))
        if gold is None:
            _warn_bad_gold(gold, reward)
            out.append((gold, pred, Verdict.BAD_GOLD))
            continue
        if pred is None or (refuse_unevaluated and refused_as_unevaluated(gold, pred)):
            verdict = Verdict.WRONG
        else:
            verdict = verifier.verdict(gold, pred)
        if verdict is Verdict.BAD_GOLD:
            _warn_bad_gold(gold, reward)
        out.append((gold, pred, verdict))
    log_extra = columns.get("log_extra")
    if callable(log_extra):  # TRL ≥1.0 shows these beside each completion in its completions table
        log_extra("gold_answer", [g for g, _, _ in out])
        log_extra("boxed_answer", [p for _, p, _ in out])
    log_metric = columns.get("log_metric")
    if callable(log_metric):  # TRL averages it per logging step: the fraction of checks cut off by the deadline
        log_metric("verifier_timeout_frac", (verifier.timeouts - timeouts_before) / max(len(out), 1))
    return out


def math_accuracy_reward(completions: list, *, verifier: MathVerifier | None = None, refuse_unevaluated: bool = True,
                         **columns) -> list[float | None]:
    """1.0 if the LAST ``\\boxed{}`` of the completion equals the gold answer under math-verify, else 0.0 (no box,
    wrong, unparsable or timed out); None when the gold answer is missing or does not parse. The behaviour on
    fractions, units, \\text{}, several boxes, separators, percentages, intervals and degrees is pinned, case by
    case with reasons, in MATH_TABLE of tests/rewards/test_rewards_math.py. ``refuse_unevaluated`` (on): a box
    holding arithmetic (``-2 \\times 8``, ``\\frac{32}{2}``) is wrong against a numeric gold (``-16``), see
    ``refused_as_unevaluated``; off reproduces plain math-verify."""
    verdicts = _verdicts(completions, columns, "math_accuracy", verifier, refuse_unevaluated)
    return [None if v is Verdict.BAD_GOLD else float(v is Verdict.CORRECT) for _, _, v in verdicts]


def sfpo_math_reward(completions: list, *, verifier: MathVerifier | None = None, wrong_box: float = 0.1,
                     refuse_unevaluated: bool = True, **columns) -> list[float | None]:
    """The SFPO paper's reward: 1.0 for a correct last ``\\boxed{}``, ``wrong_box`` (0.1) for a non-empty box
    that is wrong, 0.0 without a box (an empty ``\\boxed{}`` is no box: 0.1 for it would pay for the format
    alone) and 0.0 when the check timed out or failed (a hung verifier earns nothing). None when the gold answer
    is missing or does not parse. ``refuse_unevaluated`` as in ``math_accuracy_reward`` (a refused box is a
    wrong box: 0.1)."""
    scores = {Verdict.CORRECT: 1.0, Verdict.WRONG: wrong_box, Verdict.TIMEOUT: 0.0, Verdict.ERROR: 0.0,
              Verdict.BAD_GOLD: None}
    return [0.0 if pred is None and verdict is not Verdict.BAD_GOLD else scores[verdict]
            for _, pred, verdict in _verdicts(completions, columns, "sfpo_math", verifier, refuse_unevaluated)]


def gsm8k_accuracy_reward(completions: list, **columns) -> list[float | None]:
    """1.0 if the completion's final number equals the gold number exactly (as fractions: "1,234" = "1234.00",
    "$5" = "5", "−3" = "-3", "72." = "72"), else 0.0. The prediction is the number after the last ``####``, or
    else the number in the last ``\\boxed{}``; a number merely mentioned in the text does not count. None when
    the gold answer has no number. Pure Python: nothing here can hang, so no worker process."""
    golds = gold_answers(columns, len(completions), "gsm8k_accuracy")
    rewards = []
    for completion, gold in zip(completions, golds):
        gold_value = parse_number(gold)
        if gold_value is None:
            _warn_bad_gold(gold, "gsm8k_accuracy")
            rewards.append(None)
            continue
        text = completion_text(completion)
        pred = extract_gsm8k(text)
        if pred is None:
            pred = extract_boxed(text)
        rewards.append(float(parse_number(pred) == gold_value))
    return rewards
