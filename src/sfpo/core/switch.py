"""When SFPO turns itself off for the rest of training (the paper's entropy rule, a fixed step, or never).

A switch is a small state object: ``update(step, entropy)`` is called once per training step after the
update, and ``active`` says whether the *next* step runs SFPO (α = α0) or a plain step (α = 0). Once off, it
stays off. ``state_dict`` makes the decision survive checkpoints (the official code loses it).
It does not compute entropy: the caller passes the statistic it chose to watch.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from sfpo.core.params import SWITCHES

__all__ = ["Switch", "EntropySwitch", "FixedStepSwitch", "NeverSwitch", "entropy_zscore", "make_switch", "SWITCHES"]


def entropy_zscore(window: list[float] | tuple[float, ...]) -> float:
    """z = (H_last − mean) / (std + 1e-9) over the window, population std, the window including H_last."""
    n = len(window)
    mean = sum(window) / n
    std = math.sqrt(sum((h - mean) ** 2 for h in window) / n)
    return (window[-1] - mean) / (std + 1e-9)


class Switch:
    """Base class: on until ``_decide`` says off; off is permanent."""

    name = "base"

    def __init__(self) -> None:
        self.active = True
        self.switched_at: int | None = None

    def update(self, step: int, entropy: float | None = None) -> bool:
        """Record training step ``step`` (and its entropy); return whether SFPO stays on."""
        if self.active and self._decide(step, entropy):
            self.active = False
            self.switched_at = step
        return self.active

    def _decide(self, step: int, entropy: float | None) -> bool:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        # the switch's decision for the steps to come, under its own key: `sfpo/active` (the update's) says whether
        # the step just logged ran SFPO, and on the step where the switch fires the two differ
        return {"sfpo/switch_on": float(self.active)}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "active": self.active, "switched_at": self.switched_at}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd["name"] != self.name:
            raise ValueError(f"checkpoint holds a {sd['name']!r} switch, this run uses {self.name!r}")
        self.active, self.switched_at = sd["active"], sd["switched_at"]


class NeverSwitch(Switch):
    """SFPO stays on for the whole run."""

    name = "never"

    def _decide(self, step: int, entropy: float | None) -> bool:
        return False


class FixedStepSwitch(Switch):
    """Off after ``stop_step`` training steps (the official Demo's ``stop_step``): steps 0..stop_step-1 run SFPO."""

    name = "fixed_step"

    def __init__(self, stop_step: int) -> None:
        super().__init__()
        if stop_step < 0:
            raise ValueError(f"stop_step must be >= 0, got {stop_step}")
        self.stop_step = stop_step
        self.active = stop_step > 0
        self.switched_at = None if self.active else 0

    def _decide(self, step: int, entropy: float | None) -> bool:
        return step + 1 >= self.stop_step


class EntropySwitch(Switch):
    """The official rule: keep the last ``window`` (ω) entropies; once ω values exist, switch off when the
    z-score of the newest is ≥ ``threshold`` (τ) — an entropy rise — or, ``two_sided``, when |z| ≥ τ."""

    name = "entropy"

    def __init__(self, window: int = 30, threshold: float = 1.0, two_sided: bool = False) -> None:
        super().__init__()
        if window < 2:
            raise ValueError(f"window (ω) must be >= 2 to have a spread, got {window}")
        self.window, self.threshold, self.two_sided = window, threshold, two_sided
        self.history: deque[float] = deque(maxlen=window)
        self.last_z: float | None = None

    def _decide(self, step: int, entropy: float | None) -> bool:
        if entropy is None or not math.isfinite(entropy):
            return False  # a missing or NaN entropy is not evidence of a rise
        self.history.append(float(entropy))
        if len(self.history) < self.window:
            return False
        self.last_z = z = entropy_zscore(tuple(self.history))
        return (abs(z) if self.two_sided else z) >= self.threshold

    def metrics(self) -> dict[str, float]:
        m = super().metrics()
        if self.last_z is not None:
            m["sfpo/entropy_z"] = self.last_z
        return m

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": list(self.history), "last_z": self.last_z}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.history = deque(sd["history"], maxlen=self.window)
        self.last_z = sd["last_z"]




def make_switch(rule: str, *, window: int = 30, threshold: float = 1.0, two_sided: bool = False,
                stop_step: int | None = None) -> Switch:
    """Build a switch by its config name."""
    if rule == "entropy":
        return EntropySwitch(window, threshold, two_sided)
    if rule == "fixed_step":
        if stop_step is None:
            raise ValueError("switch 'fixed_step' needs stop_step")
        return FixedStepSwitch(stop_step)
    if rule == "never":
        return NeverSwitch()
    raise ValueError(f"unknown switch rule {rule!r}; known: {SWITCHES}")
