"""Reading runs against a baseline: when did a run first reach the baseline's best validation accuracy, and
with how many rollouts and how much training wall-clock; and whether an effect measured over several starting
policies × seeds is more than noise (a paired, two-level bootstrap). Used by ``sfpo demo`` and the harness.

Ratios follow the paper: baseline cost ÷ run cost, so 2.0 means the run needed half the rollouts.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any, Callable

__all__ = ["best_point", "first_reach", "match_ratios", "step_time", "bootstrap_ci", "effect_summary",
           "ratio_median"]

METRIC = "val/accuracy"


def _val_points(records: list[dict[str, Any]], smooth: int = 1) -> list[dict[str, Any]]:
    """Validation points; ``smooth`` > 1 replaces each accuracy by the mean of the last ``smooth`` points (a
    trailing window, so "first reached at" never looks into the future). The paper's metric is smooth=1; on small
    validation sets its max is mostly noise, which a window of 3 damps."""
    pts = [{"step": r["step"], "acc": r[METRIC], "rollouts": r.get("rollouts", 0.0),
            "time": r.get("time/train_elapsed", 0.0)} for r in records if r.get(METRIC) is not None]
    raw = [p["acc"] for p in pts]
    for i, p in enumerate(pts):
        window = raw[max(0, i - smooth + 1):i + 1]
        p["acc"] = sum(window) / len(window)
    return pts


def best_point(records: list[dict[str, Any]], smooth: int = 1) -> dict[str, Any]:
    """The first validation point with the run's best accuracy."""
    pts = _val_points(records, smooth)
    if not pts:
        raise ValueError("the run has no validation records")
    best = max(p["acc"] for p in pts)
    return next(p for p in pts if p["acc"] == best)


def first_reach(records: list[dict[str, Any]], target: float, smooth: int = 1) -> dict[str, Any] | None:
    """The first validation point with accuracy ≥ target, or None if never reached."""
    return next((p for p in _val_points(records, smooth) if p["acc"] >= target - 1e-12), None)


def step_time(records: list[dict[str, Any]]) -> float:
    """Median training-step time (rollout to update, validation excluded)."""
    times = [r["time/step"] for r in records if r.get("time/step") is not None]
    return statistics.median(times) if times else float("nan")


def match_ratios(baseline: list[dict[str, Any]], run: list[dict[str, Any]], smooth: int = 1) -> dict[str, Any]:
    """How much less the run spent to first reach the baseline's best accuracy (None if it never did).
    ``nothing_to_reach``: the baseline's best is its starting point (it never improved), so no ratio exists."""
    target = best_point(baseline, smooth)
    hit = first_reach(run, target["acc"], smooth)
    out: dict[str, Any] = {"target_acc": target["acc"], "baseline_rollouts": target["rollouts"],
                           "baseline_time": target["time"], "reached": hit is not None,
                           "nothing_to_reach": not target["rollouts"],
                           "run_rollouts": None, "run_time": None, "rollouts_ratio": None, "wallclock_ratio": None}
    if hit is not None:
        out.update(run_rollouts=hit["rollouts"], run_time=hit["time"])
        out["rollouts_ratio"] = target["rollouts"] / hit["rollouts"] if hit["rollouts"] else None
        out["wallclock_ratio"] = target["time"] / hit["time"] if hit["time"] else None
    return out


def ratio_median(values: list[float | None]) -> float | None:
    """Median of per-run ratios where None (never reached the baseline's best) ranks below every ratio, as an
    infinitely expensive run would: so a method that fails in most runs gets a median of None, not the median
    of its few successes. None for no values."""
    if not values:
        return None
    ranked = sorted(values, key=lambda v: (v is not None, v or 0.0))
    n = len(ranked)
    lo, hi = ranked[(n - 1) // 2], ranked[n // 2]
    return None if lo is None or hi is None else (lo + hi) / 2


def bootstrap_ci(units: dict[Any, dict[Any, Any]], statistic: Callable[[list], float | None], *,
                 level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile interval of ``statistic`` over a two-level bootstrap of paired per-run values.

    ``units`` maps policy → {seed: value}, each value already paired (a ratio or a difference between two
    methods run from the same policy with the same seed). Each resample draws the policies with replacement,
    then each drawn policy's seeds with replacement, so the interval carries the between-policy spread as well
    as the between-seed one; with one policy it is a plain bootstrap over seeds. A statistic that returns None
    (e.g. a median ratio where most runs never reached the target) is ranked below every number; an end of the
    interval that falls on such resamples is None. Deterministic for a ``seed``. With three policies × three
    seeds the interval is coarse; it says how far the data can be trusted, not more.
    """
    policies = [p for p in units if units[p]]
    if not policies:
        return None, None
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        sample = []
        for p in rng.choices(policies, k=len(policies)):
            vals = list(units[p].values())
            sample += rng.choices(vals, k=len(vals))
        stats.append(statistic(sample))
    stats.sort(key=lambda v: (v is not None, v or 0.0))
    tail = (1 - level) / 2
    lo, hi = stats[int(tail * (resamples - 1))], stats[int(round((1 - tail) * (resamples - 1)))]
    return lo, hi


MIN_RUNS = 3
"""Fewer paired runs than this get an interval (from two) but no verdict: two seeds that agree are not evidence."""


def effect_summary(units: dict[Any, dict[Any, Any]], *, kind: str, **kw) -> dict[str, Any]:
    """Point value, interval and verdict of a paired effect over policies × seeds.

    ``kind="ratio"``: per-run cost ratios (None = never reached); the point value is ``ratio_median`` and "no
    effect" is 1. ``kind="difference"``: per-run differences (e.g. SFPO's best validation accuracy minus
    GRPO's); the point value is the mean and "no effect" is 0. The verdict is "within noise" whenever the
    interval includes no effect, else "higher" / "lower" (for ratios: above 1 = the run was cheaper); with
    fewer than ``MIN_RUNS`` runs it is "too few runs", and one run has no interval (``ci`` None).
    """
    if kind not in ("ratio", "difference"):
        raise ValueError(f"kind must be 'ratio' or 'difference', got {kind!r}")
    flat = [v for seeds in units.values() for v in seeds.values()]
    if kind == "ratio":
        stat, null = ratio_median, 1.0
    else:
        flat = [v for v in flat if v is not None]
        units = {p: {s: v for s, v in seeds.items() if v is not None} for p, seeds in units.items()}
        stat, null = (lambda xs: sum(xs) / len(xs) if xs else None), 0.0
    point = stat(flat)
    if len(flat) < 2:
        return {"point": point, "ci": None, "n": len(flat), "policies": len([p for p in units if units[p]]),
                "verdict": "too few runs" if flat else "not measurable"}
    lo, hi = bootstrap_ci(units, stat, **kw)
    # a None end of a ratio interval means "never reached": below every ratio, so below no-effect
    lo_v, hi_v = (-math.inf if v is None else v for v in (lo, hi))
    if kind == "difference" and point is None:
        verdict = "not measurable"
    elif len(flat) < MIN_RUNS:
        verdict = "too few runs"
    elif lo_v > null:
        verdict = "higher"
    elif hi_v < null:
        verdict = "lower"
    else:
        verdict = "within noise"
    return {"point": point, "ci": [lo, hi], "n": len(flat), "policies": len([p for p in units if units[p]]),
            "verdict": verdict}
