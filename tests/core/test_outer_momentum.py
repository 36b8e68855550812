"""Outer Nesterov momentum in SlowFastUpdate (issue 24): μ = 0 is today's SFPO bit for bit, a hand-traced two-step
case on a quadratic, resuming from a checkpoint equals an uninterrupted run, an abandoned step does not leave its
displacement in the momentum, and the momentum's memory is one copy of the trainable parameters."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from sfpo.core import SlowFastUpdate
from mlp_setup import MLPSetup, assert_same, assert_same_state


def _quadratic_run(mu: float, steps: int = 2):
    """L(θ) = ½(θ − 3)², SGD η = 0.5, K = 2, α = 0.5, θ0 = 1: the starts of every pass, the weight after each
    step and each step's metrics."""
    theta = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=0.5)
    seen, after, metrics = [], [], []

    def base_pass():
        seen.append(theta.item())
        opt.zero_grad()
        (0.5 * (theta - 3.0).pow(2).sum()).backward()
        opt.step()

    update = SlowFastUpdate([theta], inner_steps=2, alpha=0.5, optimizer=opt, outer_momentum=mu)
    for _ in range(steps):
        metrics.append(update.step(base_pass))
        after.append(theta.item())
    return seen, after, metrics


def test_hand_traced_nesterov_on_a_quadratic():
    """μ = 0.5; m ← μm + D, θ̃ = θ0 + α(D + μm), D = θK − θ0. Every number is dyadic, so the trace is exact.

    Step 0:  θ0 = 1 → θ1 = 2 → θ2 = 2.5;  D = 1.5,  m = 0·0.5 + 1.5 = 1.5
             θ̃ = 1 + 0.5·(1.5 + 0.5·1.5) = 2.125         (plain SFPO: 1.75)
             slow pass: θ' = 2.125 − 0.5·(2.125 − 3) = 2.5625
    Step 1:  θ0 = 2.5625 → θ1 = 2.78125 → θ2 = 2.890625;  D = 0.328125,  m = 0.5·1.5 + 0.328125 = 1.078125
             θ̃ = 2.5625 + 0.5·(0.328125 + 0.5·1.078125) = 2.99609375
             slow pass: θ' = 2.99609375 + 0.5·0.00390625 = 2.998046875
    """
    seen, after, m = _quadratic_run(0.5)
    assert seen == [1.0, 2.0, 2.125, 2.5625, 2.78125, 2.99609375]
    assert after == [2.5625, 2.998046875]
    assert [x["sfpo/momentum_norm"] for x in m] == [1.5, 1.078125]
    assert [x["sfpo/drift_norm"] for x in m] == [1.5, 0.328125]
    assert [x["sfpo/reposition_norm"] for x in m] == [1.125, 0.43359375]  # ‖θ̃ − θ0‖ = α‖D + μm‖


def test_zero_momentum_is_sfpo_bit_for_bit():
    for kind in ("sgd", "adamw"):
        plain, mom0 = MLPSetup(kind), MLPSetup(kind)
        u_plain = SlowFastUpdate(plain.model, inner_steps=3, alpha=0.8, optimizer=plain.optimizer)
        u_mom0 = SlowFastUpdate(mom0.model, inner_steps=3, alpha=0.8, optimizer=mom0.optimizer, outer_momentum=0.0)
        for _ in range(3):
            a, b = u_plain.step(plain.one_pass), u_mom0.step(mom0.one_pass)
            assert {k: v for k, v in a.items() if not k.startswith("time/")} == \
                {k: v for k, v in b.items() if not k.startswith("time/")}
        assert_same(plain.weights(), mom0.weights())
        assert_same_state(plain.opt_state(), mom0.opt_state())
        assert u_mom0.extra_bytes() == u_plain.extra_bytes()  # no momentum buffer at μ = 0


def test_momentum_changes_the_trajectory_and_costs_one_copy():
    plain, mom = MLPSetup("adamw"), MLPSetup("adamw")
    u_plain = SlowFastUpdate(plain.model, inner_steps=3, alpha=0.8, optimizer=plain.optimizer)
    u_mom = SlowFastUpdate(mom.model, inner_steps=3, alpha=0.8, optimizer=mom.optimizer, outer_momentum=0.9)
    m1 = u_mom.step(mom.one_pass)
    u_plain.step(plain.one_pass)
    # first step: m = D, so θ̃ = θ0 + α(1 + μ)D — different from plain SFPO's θ0 + αD
    assert m1["sfpo/reposition_norm"] == pytest.approx(0.8 * 1.9 * m1["sfpo/drift_norm"], rel=1e-5)
    assert m1["sfpo/momentum_norm"] == pytest.approx(m1["sfpo/drift_norm"], rel=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(plain.weights(), mom.weights()))
    trainable = sum(p.numel() * p.element_size() for p in mom.trainable)
    assert u_mom.extra_bytes() == u_plain.extra_bytes() + trainable


def _fresh(seed: int = 0):
    s = MLPSetup("adamw", seed=seed)
    return s, SlowFastUpdate(s.model, inner_steps=3, alpha=0.8, optimizer=s.optimizer, outer_momentum=0.5)


@pytest.mark.parametrize("stop_at", [(2, "fast", 1), (2, "slow", 3)], ids=["mid-fast", "after-reposition"])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(stop_at):
    """A checkpoint (weights, optimizer, SFPO state with θ0 and m) taken inside step 2 resumes to the same bits."""
    steps = 4
    s, update = _fresh()
    log = [update.step(s.one_pass) for _ in range(steps)]

    s1, u1 = _fresh()
    ckpt = None
    for step in range(steps):
        u1.begin()
        while u1.phase in ("fast", "slow"):
            if (step, u1.phase, u1.fast_done) == stop_at:
                buf = io.BytesIO()
                torch.save({"model": s1.model.state_dict(), "optimizer": s1.optimizer.state_dict(),
                            "sfpo": u1.state_dict()}, buf)
                ckpt = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
                break
            u1.record_pass(s1.one_pass())
        if ckpt is not None:
            break
        u1.end()
    assert ckpt is not None and "momentum" in ckpt["sfpo"]

    s2, u2 = _fresh(seed=1)  # other initial weights: everything must come from the checkpoint
    s2.x, s2.y = s.x, s.y
    s2.model.load_state_dict(ckpt["model"])
    s2.optimizer.load_state_dict(ckpt["optimizer"])
    u2.load_state_dict(ckpt["sfpo"])
    while u2.phase in ("fast", "slow"):
        u2.record_pass(s2.one_pass())
    tail = [u2.end()] + [u2.step(s2.one_pass) for _ in range(stop_at[0] + 1, steps)]
    assert_same(s2.weights(), s.weights())
    assert_same_state(s2.opt_state(), s.opt_state())
    strip = lambda ms: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in ms]  # noqa: E731
    assert strip(tail) == strip(log[stop_at[0]:])


def test_an_abandoned_step_resets_the_momentum(caplog):
    s, update = _fresh()
    update.step(s.one_pass)
    assert update.state_dict()["momentum"][0].abs().sum() > 0
    update.begin()
    for _ in range(3):  # the K fast passes and the reposition: m has taken this step's D
        update.record_pass(s.one_pass())
    assert update.phase == "slow"
    assert update.abort() is True
    assert all(float(m.abs().sum()) == 0.0 for m in update.state_dict()["momentum"])
    assert "outer momentum reset" in caplog.text
    # a step abandoned before the reposition leaves m alone
    update.step(s.one_pass)
    kept = [m.clone() for m in update.state_dict()["momentum"]]
    update.begin()
    update.record_pass(s.one_pass())
    update.abort()
    assert_same(update.state_dict()["momentum"], kept)


def test_bad_momentum_is_refused():
    s = MLPSetup("sgd")
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="outer_momentum must lie in"):
            SlowFastUpdate(s.model, outer_momentum=bad)
    with pytest.raises(ValueError, match="kl_budget"):
        SlowFastUpdate(s.model, outer_momentum=0.5, kl_budget=0.01)
