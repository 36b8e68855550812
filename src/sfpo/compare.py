"""Reading runs against a baseline: when did a run first reach the baseline's best validation accuracy, and
with how many rollouts and how much training wall-clock. Used by ``sfpo demo`` and the reproduction harness.

Ratios follow the paper: baseline cost ÷ run cost, so 2.0 means the run needed half the rollouts.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["best_point", "first_reach", "match_ratios", "step_time"]

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
    """How much less the run spent to first reach the baseline's best accuracy (None if it never did)."""
    target = best_point(baseline, smooth)
    hit = first_reach(run, target["acc"], smooth)
    out: dict[str, Any] = {"target_acc": target["acc"], "baseline_rollouts": target["rollouts"],
                           "baseline_time": target["time"], "reached": hit is not None,
                           "run_rollouts": None, "run_time": None, "rollouts_ratio": None, "wallclock_ratio": None}
    if hit is not None:
        out.update(run_rollouts=hit["rollouts"], run_time=hit["time"])
        out["rollouts_ratio"] = target["rollouts"] / hit["rollouts"] if hit["rollouts"] else None
        out["wallclock_ratio"] = target["time"] / hit["time"] if hit["time"] else None
    return out
