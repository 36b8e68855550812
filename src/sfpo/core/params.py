"""SFPO's own hyperparameters, defined and checked once.

``SFPOParams`` is the one parameter set of the algorithm: the native config (``algorithm.*``), TRL's
``SFPOConfig`` and the verl ``sfpo`` group each build one from their fields, whose names are these, so every rule
below is written once and a bad value gets the same message at every front door (each prefixes its own
namespace: ``algorithm.``, ``sfpo.``). What only one engine refuses (FSDP2 with optimizer-state policies, verl's
checkpoints and outer momentum, …) stays in its adapter. Importing this module builds nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["SFPOParams", "ALPHA_MAX", "OUTER_MOMENTUM_MAX", "OPTIMIZER_STATE_POLICIES", "LR_STEPPING", "SWITCHES",
           "ALPHA_RULES"]

ALPHA_MAX = 2.0
"""The largest α accepted. α ≤ 1 puts θ̃ on the segment θ0 → θK (α = 1 is K+1 plain passes); α > 1 extrapolates
along the fast trajectory (θ̃ beyond θK). Past 2 the reposition is more than twice the whole fast displacement,
which nobody has reported to train; the bound catches a typo (α = 8 for 0.8) rather than a choice."""

OUTER_MOMENTUM_MAX = 0.99
"""The largest outer momentum μ accepted: the reposition's effective length grows as 1/(1 − μ) (100× at 0.99)."""

OPTIMIZER_STATE_POLICIES = ("carry", "reset", "restore")
LR_STEPPING = ("train_step", "optimizer_step")
SWITCHES = ("entropy", "fixed_step", "never")
ALPHA_RULES = ("fixed", "kl_budget")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class SFPOParams:
    """One SFPO training step (Algorithm 1) and when SFPO stops."""

    inner_steps: int = 3
    """K: fast passes over each rollout batch (Stage I). 0 makes every step one plain pass."""
    alpha: float = 0.8
    """α: reposition θ̃ = θ0 + α(θK − θ0) (Stage II). 0 skips Stage I (a plain pass); 1 keeps θK (K+1 plain passes);
    up to ``ALPHA_MAX`` extrapolates past θK. With alpha_rule="kl_budget", the largest α a step may use."""
    alpha_rule: str = "fixed"
    """"fixed": α every step (the paper); "kl_budget": trust-region SFPO, the largest α ≤ ``alpha`` within
    ``kl_budget`` of θ0's policy on the batch."""
    kl_budget: float = 0.0025
    """alpha_rule="kl_budget" only: KL(π_θ0 ‖ π_θ̃) per response token allowed at θ̃."""
    outer_momentum: float = 0.0
    """μ: Nesterov momentum on θK − θ0 across training steps (0: the paper's reposition)."""
    slow_pass: bool = True
    """Run Stage III; False is the paper's "no slow correction" ablation."""
    optimizer_state: str = "carry"
    """Optimizer state at the reposition: "carry" (official), "reset", "restore" (the state saved at θ0)."""
    lr_stepping: str = "train_step"
    """"train_step": the LR scheduler steps once per training step (official); "optimizer_step": every step."""
    switch: str = "entropy"
    """When SFPO turns itself off for good: "entropy" (z-score rule), "fixed_step", "never"."""
    switch_window: int = 30
    """ω: entropies in the z-score window."""
    switch_threshold: float = 1.0
    """τ: switch off when z ≥ τ (|z| with switch_two_sided)."""
    switch_two_sided: bool = False
    """Use |z| (Algorithm 1's formula) instead of the one-sided rise (its prose, the official code)."""
    switch_stop_step: int | None = None
    """switch="fixed_step": training steps before this one run SFPO."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def runs_stage_one(self) -> bool:
        """Whether a step with SFPO on runs Stage I at all (Algorithm 1: α = 0 or K = 0 is a plain step)."""
        return self.inner_steps > 0 and self.alpha > 0.0

    def errors(self) -> list[str]:
        """Every rule this set breaks, one line each with the reason (empty: valid)."""
        out = []
        if not _integer(self.inner_steps) or self.inner_steps < 0:
            out.append(f"inner_steps (K) must be an integer >= 0 (0: every step one plain pass), "
                       f"got {self.inner_steps!r}")
        if not _number(self.alpha) or not 0.0 <= self.alpha <= ALPHA_MAX:
            out.append(f"alpha must lie in [0, {ALPHA_MAX:g}] (0: a plain pass; (0, 1): θ̃ between θ0 and θK, the "
                       f"paper's SFPO; 1: θK, K+1 plain passes; (1, {ALPHA_MAX:g}]: extrapolation past θK), "
                       f"got {self.alpha}")
        if not _number(self.outer_momentum) or not 0.0 <= self.outer_momentum <= OUTER_MOMENTUM_MAX:
            out.append(f"outer_momentum must lie in [0, {OUTER_MOMENTUM_MAX:g}] (0: off, the paper's reposition; "
                       f"the reposition's effective length grows as 1/(1 − μ)), got {self.outer_momentum}")
        for name, allowed in (("alpha_rule", ALPHA_RULES), ("optimizer_state", OPTIMIZER_STATE_POLICIES),
                              ("lr_stepping", LR_STEPPING), ("switch", SWITCHES)):
            if getattr(self, name) not in allowed:
                out.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.kl_budget, (int, float)) or isinstance(self.kl_budget, bool) or \
                not self.kl_budget > 0:  # inf: measure but never shrink α
            out.append(f"kl_budget must be > 0 (a KL per token), got {self.kl_budget}")
        if self.outer_momentum and self.alpha_rule == "kl_budget":
            out.append("outer_momentum cannot be combined with alpha_rule='kl_budget': the trust region chooses α "
                       "along the segment θ0 → θK, and the momentum moves θ̃ off that segment")
        if not _integer(self.switch_window) or self.switch_window < 2:
            out.append(f"switch_window must be an integer >= 2 (a z-score needs a spread), got {self.switch_window!r}")
        if not _number(self.switch_threshold):
            out.append(f"switch_threshold must be a finite number, got {self.switch_threshold}")
        if self.switch == "fixed_step" and self.switch_stop_step is None:
            out.append("switch='fixed_step' needs switch_stop_step (the first training step without SFPO)")
        if self.switch_stop_step is not None and (not _integer(self.switch_stop_step) or self.switch_stop_step < 0):
            out.append(f"switch_stop_step must be an integer >= 0, got {self.switch_stop_step!r}")
        return out

    def validate(self) -> None:
        """Raise ValueError naming the first broken rule and why."""
        errors = self.errors()
        if errors:
            raise ValueError(errors[0])

    @classmethod
    def from_fields(cls, source, prefix: str = "", error: type[Exception] = ValueError) -> "SFPOParams":
        """Build from any object with (some of) these attribute names (a front door's config); a broken rule
        raises ``error`` with the front door's ``prefix`` (e.g. "algorithm.") before the message."""
        values = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
        try:
            return cls(**values)
        except ValueError as e:
            raise error(f"{prefix}{e}") from None
