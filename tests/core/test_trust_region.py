"""Trust-region SFPO (``kl_budget``): an infinite budget is plain SFPO bit for bit, a tiny one pulls θ̃ back to
θ0, and the divergence measured at θ̃ by the test itself stays within the budget; θ̃ stays on the segment."""

import math

import pytest
import torch

from mlp_setup import MLPSetup, assert_same, assert_same_state
from sfpo.core import SlowFastUpdate


def kl_from(setup: MLPSetup, theta0_probs: torch.Tensor) -> float:
    """Exact KL(p_θ0 ‖ p_θ) of the classifier, averaged over the batch (a real divergence, locally quadratic)."""
    with torch.no_grad():
        logp = torch.log_softmax(setup.model(setup.x), -1)
    return float((theta0_probs * (theta0_probs.log() - logp)).sum(-1).mean())


def probs(setup: MLPSetup) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(setup.model(setup.x), -1)


def sfpo_steps(budget, steps=3, alpha=0.8, on_slow=None):
    """``steps`` SFPO steps (K=3) with ``kl_budget=budget``; ``on_slow(setup, p0)`` runs at each slow pass start."""
    s = MLPSetup("adamw")
    upd = SlowFastUpdate(s.trainable, inner_steps=3, alpha=alpha, optimizer=s.optimizer, kl_budget=budget)
    metrics = []
    for _ in range(steps):
        p0 = probs(s)

        def base_pass():
            if on_slow is not None and upd.phase == "slow":
                on_slow(s, p0)
            return s.one_pass()

        metrics.append(upd.step(base_pass, measure_kl=lambda: kl_from(s, p0)))
    return s, metrics


def test_infinite_budget_is_plain_sfpo_bit_for_bit():
    plain = MLPSetup("adamw")
    upd = SlowFastUpdate(plain.trainable, inner_steps=3, alpha=0.8, optimizer=plain.optimizer)
    for _ in range(3):
        upd.step(plain.one_pass)
    tr, metrics = sfpo_steps(math.inf)
    assert_same(tr.weights(), plain.weights())
    assert_same_state(tr.opt_state(), plain.opt_state())
    assert all(m["sfpo/alpha"] == 0.8 and m["sfpo/alpha_backtracks"] == 0 for m in metrics)
    assert all(m["sfpo/kl_fast"] > 0 for m in metrics)  # it measured, and measuring changed no bit


def test_tiny_budget_keeps_theta_tilde_near_theta0():
    _, metrics = sfpo_steps(1e-9)
    for m in metrics:
        assert 0.0 <= m["sfpo/alpha"] < 0.01  # sqrt(1e-9 / KL(θK)) with KL(θK) ~ 1e-2..1
        assert m["sfpo/kl_reposition"] <= 1e-9


@pytest.mark.parametrize("budget", [1e-4, 1e-3, 1e-2])
def test_measured_kl_at_theta_tilde_respects_the_budget(budget):
    seen = []
    _, metrics = sfpo_steps(budget, on_slow=lambda s, p0: seen.append(kl_from(s, p0)))
    assert len(seen) == 3
    for kl, m in zip(seen, metrics):
        assert kl <= budget  # the test's own measurement at the start of the slow pass
        assert kl == pytest.approx(m["sfpo/kl_reposition"], rel=0, abs=0)
        assert 0.0 < m["sfpo/alpha"] <= 0.8
    assert any(m["sfpo/alpha"] < 0.8 for m in metrics)  # the budget bound on some step (else nothing was tested)


def test_theta_tilde_lies_on_the_segment_at_the_chosen_alpha():
    s = MLPSetup("adamw")
    upd = SlowFastUpdate(s.trainable, inner_steps=3, alpha=0.8, optimizer=s.optimizer, kl_budget=1e-3)
    theta0, p0, at_slow = s.weights(), probs(s), {}

    def base_pass():
        if upd.phase == "slow":
            at_slow["theta"] = s.weights()
        elif upd.fast_done == 2:  # the third fast pass ends at θK: remember it right after
            out = s.one_pass()
            at_slow["theta_k"] = s.weights()
            return out
        return s.one_pass()

    m = upd.step(base_pass, measure_kl=lambda: kl_from(s, p0))
    a = m["sfpo/alpha"]
    assert 0 < a < 0.8
    # the backtracking lerps compose to θ0 + α(θK − θ0) up to rounding of the repeated lerps (float32, |θ| ~ 1)
    for t, t0, tk in zip(at_slow["theta"], theta0, at_slow["theta_k"]):
        torch.testing.assert_close(t, t0 + a * (tk - t0), rtol=0, atol=1e-6)


def test_non_finite_measurement_falls_back_to_theta0():
    s = MLPSetup("adamw")
    upd = SlowFastUpdate(s.trainable, inner_steps=2, alpha=0.8, optimizer=s.optimizer, kl_budget=1e-2)
    theta0, seen = s.weights(), {}

    def base_pass():
        if upd.phase == "slow":
            seen["theta"] = s.weights()
        return s.one_pass()

    m = upd.step(base_pass, measure_kl=lambda: float("nan"))
    assert m["sfpo/alpha"] == 0.0
    assert_same(seen["theta"], theta0)  # lerp weight 1 lands on θ0 exactly


def test_budget_errors():
    s = MLPSetup("adamw")
    with pytest.raises(ValueError, match="kl_budget must be > 0"):
        SlowFastUpdate(s.trainable, optimizer=s.optimizer, kl_budget=0.0)
    upd = SlowFastUpdate(s.trainable, optimizer=s.optimizer, kl_budget=1e-2)
    with pytest.raises(ValueError, match="needs measure_kl"):
        upd.step(s.one_pass)
    upd.step(s.one_pass, active=False)  # a switched-off step never repositions: no measurement needed
