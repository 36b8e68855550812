"""The rules on SFPO's own hyperparameters, written once: the native config, TRL's ``SFPOConfig``, the verl
``sfpo`` group and ``SlowFastUpdate`` all check through these, so a bad value gets the same message at every front
door. Torch-free (the verl driver and config parsers import it without building anything)."""

from __future__ import annotations

import math

ALPHA_MAX = 2.0
"""The largest α accepted. α ≤ 1 puts θ̃ on the segment θ0 → θK (α = 1 is K+1 plain passes); α > 1 extrapolates
along the fast trajectory (θ̃ beyond θK). Past 2 the reposition is more than twice the whole fast displacement,
which nobody has reported to train; the bound catches a typo (α = 8 for 0.8) rather than a choice."""

OUTER_MOMENTUM_MAX = 0.99
"""The largest outer momentum μ accepted: the reposition's effective length grows as 1/(1 − μ) (100× at 0.99)."""


def alpha_error(alpha: float) -> str | None:
    """Why ``alpha`` is not a valid α, or None."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= ALPHA_MAX):
        return (f"alpha must lie in [0, {ALPHA_MAX:g}] (0: a plain pass; (0, 1): θ̃ between θ0 and θK, the paper's "
                f"SFPO; 1: θK, K+1 plain passes; (1, {ALPHA_MAX:g}]: extrapolation past θK), got {alpha}")
    return None


def outer_momentum_error(mu: float) -> str | None:
    """Why ``mu`` is not a valid outer momentum μ, or None."""
    if not (isinstance(mu, (int, float)) and math.isfinite(mu) and 0.0 <= mu <= OUTER_MOMENTUM_MAX):
        return (f"outer_momentum must lie in [0, {OUTER_MOMENTUM_MAX:g}] (0: off, today's SFPO; the reposition's "
                f"effective length grows as 1/(1 − μ)), got {mu}")
    return None


def inner_steps_error(k: int) -> str | None:
    """Why ``k`` is not a valid K, or None."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        return f"inner_steps (K) must be an integer >= 0 (0: every step one plain pass), got {k!r}"
    return None
