"""SlowFastUpdate: the "off" settings are exactly the base update, a hand trace of Algorithm 1, the anchor,
frozen parameters, optimizer-state policies and LR stepping (checkpoints and memory: test_slow_fast_state.py).

The base update is a real one (mlp_setup.py): a 2-layer MLP classifier, cross-entropy, one pass = several
mini-batch optimizer steps over a fixed batch (SGD with momentum or AdamW). Runs are compared bit for bit
(torch.equal): every equivalence below is exact in floating point, not merely close.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sfpo.core import SlowFastUpdate
from mlp_setup import MLPSetup, assert_same, assert_same_state, lerp_reference

# ------------------------------------------------------------------------- the "off" settings are exact


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("policy", ["carry", "reset", "restore"])
@pytest.mark.parametrize("inner_steps, alpha", [(0, 0.8), (3, 0.0)], ids=["K=0", "alpha=0"])
def test_k0_and_alpha0_are_one_plain_pass(kind, policy, inner_steps, alpha):
    """K=0, and α=0 (Algorithm 1 skips Stage I), are a plain step: weights AND optimizer state identical,
    whatever the optimizer-state policy (there is no reposition for it to act at)."""
    sfpo, plain = MLPSetup(kind), MLPSetup(kind)
    update = SlowFastUpdate(sfpo.model, inner_steps=inner_steps, alpha=alpha, optimizer=sfpo.optimizer,
                            optimizer_state=policy)
    for _ in range(3):  # several steps, so the optimizer state is not empty when a step starts
        metrics = update.step(sfpo.one_pass)
        plain.one_pass()
        assert metrics["sfpo/alpha"] == 0.0
    assert sfpo.passes == plain.passes == 3
    assert_same(sfpo.weights(), plain.weights())
    assert_same_state(sfpo.opt_state(), plain.opt_state())
    assert update.extra_bytes() == 0  # no anchor is taken when there is nothing to reposition


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_switched_off_is_one_plain_pass(kind):
    sfpo, plain = MLPSetup(kind), MLPSetup(kind)
    update = SlowFastUpdate(sfpo.model, inner_steps=3, alpha=0.8, optimizer=sfpo.optimizer, optimizer_state="reset")
    for _ in range(2):
        metrics = update.step(sfpo.one_pass, active=False)
        plain.one_pass()
    assert metrics["sfpo/active"] == 0.0 and metrics["sfpo/alpha"] == 0.0
    assert_same(sfpo.weights(), plain.weights())
    assert_same_state(sfpo.opt_state(), plain.opt_state())


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_alpha1_carry_is_k_plus_1_plain_passes(kind):
    """α=1 keeps θK and the carried state: K+1 plain passes per step, bit for bit (GRPO with K+1 passes)."""
    sfpo, plain = MLPSetup(kind), MLPSetup(kind)
    K = 3
    update = SlowFastUpdate(sfpo.model, inner_steps=K, alpha=1.0, optimizer=sfpo.optimizer)
    for _ in range(2):
        update.step(sfpo.one_pass)
        for _ in range(K + 1):
            plain.one_pass()
    assert sfpo.passes == plain.passes == 2 * (K + 1)
    assert_same(sfpo.weights(), plain.weights())
    assert_same_state(sfpo.opt_state(), plain.opt_state())


# ------------------------------------------------------------------------------ Algorithm 1 by hand


def test_hand_traced_sgd_on_a_quadratic():
    """L(θ) = ½(θ − 3)², plain SGD with η = 0.5, K = 2, α = 0.5, θ^{0,0} = 1. Every number is dyadic, so the
    trace is exact in floating point. Gradient ∇L(θ) = θ − 3.

    Step 0:  Stage I    θ1 = 1 − 0.5·(1 − 3)       = 2
                        θ2 = 2 − 0.5·(2 − 3)       = 2.5
             Stage II   θ̃  = 1 + 0.5·(2.5 − 1)     = 1.75        drift ‖θ2 − θ0‖ = 1.5, ‖θ̃ − θ0‖ = 0.75
             Stage III  θ' = 1.75 − 0.5·(1.75 − 3) = 2.375
             unified form: 1 − 0.5·[0.5·((−2) + (−1)) + (−1.25)] = 1 + 1.375 = 2.375  ✓
             losses at the start of each pass: L(1) = 2, L(2) = 0.5, L(1.75) = 0.78125
    Step 1:  θ0 = 2.375 → θ1 = 2.6875 → θ2 = 2.84375 → θ̃ = 2.375 + 0.5·0.46875 = 2.609375
             → θ' = 2.609375 + 0.5·0.390625 = 2.8046875
    """
    theta = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=0.5)
    seen = []

    def base_pass():
        seen.append(theta.item())
        opt.zero_grad()
        loss = 0.5 * (theta - 3.0).pow(2).sum()
        loss.backward()
        opt.step()
        return loss

    update = SlowFastUpdate([theta], inner_steps=2, alpha=0.5, optimizer=opt)
    m = update.step(base_pass)
    assert seen == [1.0, 2.0, 1.75]
    assert theta.item() == 2.375
    assert m["sfpo/drift_norm"] == 1.5 and m["sfpo/reposition_norm"] == 0.75
    assert (m["sfpo/loss_first_fast"], m["sfpo/loss_last_fast"], m["sfpo/loss_slow"]) == (2.0, 0.5, 0.78125)
    assert m["sfpo/alpha"] == 0.5 and m["sfpo/active"] == 1.0
    seen.clear()
    update.step(base_pass)
    assert seen == [2.375, 2.6875, 2.609375]
    assert theta.item() == 2.8046875


def test_hand_traced_extrapolation_alpha_above_one():
    """α > 1 extrapolates along the fast trajectory: the same quadratic as above (L = ½(θ − 3)², SGD η = 0.5,
    K = 2, θ0 = 1), α = 1.5. Stage I: θ1 = 2, θ2 = 2.5. Stage II: θ̃ = 1 + 1.5·(2.5 − 1) = 3.25, past θK.
    Stage III: θ' = 3.25 − 0.5·(3.25 − 3) = 3.125. Dyadic throughout, so exact."""
    theta = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=0.5)
    seen = []

    def base_pass():
        seen.append(theta.item())
        opt.zero_grad()
        (0.5 * (theta - 3.0).pow(2).sum()).backward()
        opt.step()

    m = SlowFastUpdate([theta], inner_steps=2, alpha=1.5, optimizer=opt).step(base_pass)
    assert seen == [1.0, 2.0, 3.25]
    assert theta.item() == 3.125
    assert m["sfpo/drift_norm"] == 1.5 and m["sfpo/reposition_norm"] == 2.25 and m["sfpo/alpha"] == 1.5


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("policy", ["carry", "reset", "restore"])
def test_matches_a_hand_written_reference(kind, policy):
    """The whole step against Algorithm 1 written out with a separate mechanism for each state policy:
    reset = a brand-new optimizer, restore = ``load_state_dict`` of a deep copy taken at θ0."""
    K, alpha = 2, 0.7
    sfpo, ref = MLPSetup(kind), MLPSetup(kind)
    update = SlowFastUpdate(sfpo.model, inner_steps=K, alpha=alpha, optimizer=sfpo.optimizer,
                            optimizer_state=policy)
    for _ in range(3):
        update.step(sfpo.one_pass)

        anchor = [p.detach().clone() for p in ref.trainable]
        saved = copy.deepcopy(ref.optimizer.state_dict())
        for _ in range(K):
            ref.one_pass()
        lerp_reference(ref, anchor, alpha)
        if policy == "reset":
            ref.optimizer = ref.new_optimizer()
        elif policy == "restore":
            ref.optimizer.load_state_dict(saved)
        ref.one_pass()
    assert_same(sfpo.weights(), ref.weights())
    assert_same_state(sfpo.opt_state(), ref.opt_state())


def test_restore_slow_pass_starts_from_the_state_saved_at_theta0():
    K, M = 3, 3
    s = MLPSetup("adamw", mini_batches=M)
    update = SlowFastUpdate(s.model, inner_steps=K, alpha=0.8, optimizer=s.optimizer, optimizer_state="restore")
    at_slow_pass = []

    def base_pass():
        if update.phase == "slow":
            at_slow_pass.append(s.opt_state())
        return s.one_pass()

    update.step(base_pass)
    assert at_slow_pass[0] == {}  # θ^{0,0} had no state: the slow pass of step 0 starts fresh
    assert all(float(st["step"]) == M for st in s.opt_state().values())
    saved = s.opt_state()
    update.step(base_pass)
    assert_same_state(at_slow_pass[1], saved)  # exp_avg, exp_avg_sq and step exactly as at θ^{1,0}
    assert all(float(st["step"]) == 2 * M for st in s.opt_state().values())  # the fast steps are forgotten


def test_reset_slow_pass_starts_from_a_fresh_state():
    K, M = 3, 3
    s = MLPSetup("adamw", mini_batches=M)
    update = SlowFastUpdate(s.model, inner_steps=K, alpha=0.8, optimizer=s.optimizer, optimizer_state="reset")
    at_slow_pass = []

    def base_pass():
        if update.phase == "slow":
            at_slow_pass.append({id(p): dict(s.optimizer.state.get(p, {})) for p in s.trainable})
        return s.one_pass()

    for _ in range(2):
        update.step(base_pass)
        assert all(float(st["step"]) == M for st in s.opt_state().values())
    assert all(state == {} for snap in at_slow_pass for state in snap.values())


def test_carry_runs_the_step_count_on():
    K, M = 3, 3
    s = MLPSetup("adamw", mini_batches=M)
    update = SlowFastUpdate(s.model, inner_steps=K, alpha=0.8, optimizer=s.optimizer, optimizer_state="carry")
    update.step(s.one_pass)
    assert all(float(st["step"]) == (K + 1) * M for st in s.opt_state().values())


def test_drift_norm_is_the_distance_from_theta0_to_thetaK():
    s = MLPSetup("adamw")
    update = SlowFastUpdate(s.model, inner_steps=2, alpha=0.6, optimizer=s.optimizer)
    theta0 = [p.detach().clone() for p in s.trainable]
    at_slow = []
    update.begin()
    while update.phase != "done":
        if update.phase == "slow":
            at_slow.append([p.detach().clone() for p in s.trainable])
        loss = s.one_pass()
        if update.phase == "fast" and update.fast_done == 1:
            theta_k = [p.detach().clone() for p in s.trainable]  # after this record_pass: the K-th
        update.record_pass(loss)
    m = update.end()
    expected = torch.cat([(k - z).flatten() for k, z in zip(theta_k, theta0)]).double().norm().item()
    assert m["sfpo/drift_norm"] == pytest.approx(expected, rel=1e-6)
    assert m["sfpo/reposition_norm"] == pytest.approx(0.6 * expected, rel=1e-6)
    moved = torch.cat([(t - z).flatten() for t, z in zip(at_slow[0], theta0)]).double().norm().item()
    assert moved == pytest.approx(0.6 * expected, rel=1e-5)  # θ̃ really is α of the way from θ0 to θK


# --------------------------------------------------------------------------------------- the anchor


def test_anchor_is_taken_before_the_first_fast_pass():
    s = MLPSetup("adamw")
    K, alpha = 3, 0.8
    update = SlowFastUpdate(s.model, inner_steps=K, alpha=alpha, optimizer=s.optimizer)
    seen = []  # (phase, anchor, params at the start of the pass, params at its end)

    def base_pass():
        phase, anchor = update.phase, [a.clone() for a in update.anchor.tensors]
        start = [p.detach().clone() for p in s.trainable]
        loss = s.one_pass()
        seen.append((phase, anchor, start, [p.detach().clone() for p in s.trainable]))
        return loss

    for _ in range(2):  # the second step anchors again, at the first step's result
        seen.clear()
        theta0 = [p.detach().clone() for p in s.trainable]
        update.step(base_pass)
        assert [phase for phase, *_ in seen] == ["fast"] * K + ["slow"]
        assert_same(seen[0][1], theta0)  # anchored before the first fast pass ...
        assert_same(seen[0][2], theta0)  # ... which starts at θ0
        for _, anchor, _, _ in seen:
            assert_same(anchor, theta0)  # the anchor never moves during the step
        for k in range(1, K):
            assert_same(seen[k][2], seen[k - 1][3])  # fast passes chain θ^{s,k} → θ^{s,k+1}
        theta_k = seen[K - 1][3]
        assert_same(seen[K][2], [torch.lerp(p, a, 1 - alpha) for p, a in zip(theta_k, theta0)])  # slow at θ̃


def test_no_anchor_for_plain_steps():
    s = MLPSetup("adamw")
    update = SlowFastUpdate(s.model, inner_steps=3, alpha=0.8, optimizer=s.optimizer)
    update.step(s.one_pass, active=False)
    assert update.extra_bytes() == 0 and s.passes == 1


def test_frozen_parameters_are_neither_touched_nor_copied():
    s = MLPSetup("adamw", frozen=True)
    frozen_w = s.model[0].weight.detach().clone()
    update = SlowFastUpdate(s.model, inner_steps=3, alpha=0.5, optimizer=s.optimizer, optimizer_state="reset")
    assert [id(p) for p in update.params] == [id(p) for p in s.trainable]
    update.step(s.one_pass)
    # The pass added 1 to the frozen statistic in each of the 4 passes; a reposition would have pulled it back.
    assert torch.equal(s.frozen, torch.full((5, 7), 4.0))
    assert torch.equal(s.model[0].weight, frozen_w)
    assert update.extra_bytes() == s.trainable_bytes()
    frozen_ptrs = {s.frozen.data_ptr(), s.model[0].weight.data_ptr()}
    assert not any(a.shape in {(5, 7), (16, 6)} for a in update.anchor.tensors)
    assert not any(a.data_ptr() in frozen_ptrs for a in update.anchor.tensors)
    assert 0 not in [len(st) for st in s.opt_state().values()]
    assert len(s.opt_state()) == len(s.trainable)


def test_all_parameters_frozen_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        SlowFastUpdate(model)


def test_offloaded_anchor_gives_the_same_bits():
    """``anchor_device`` takes the path that moves θ0 back piece by piece; on CPU it must agree exactly."""
    a, b = MLPSetup("adamw"), MLPSetup("adamw")
    ua = SlowFastUpdate(a.model, inner_steps=2, alpha=0.7, optimizer=a.optimizer, optimizer_state="restore")
    ub = SlowFastUpdate(b.model, inner_steps=2, alpha=0.7, optimizer=b.optimizer, optimizer_state="restore",
                        anchor_device="cpu")
    for _ in range(2):
        ma, mb = ua.step(a.one_pass), ub.step(b.one_pass)
    assert_same(a.weights(), b.weights())
    assert_same_state(a.opt_state(), b.opt_state())
    assert ma["sfpo/drift_norm"] == mb["sfpo/drift_norm"]


# ---------------------------------------------------------------------------------- ablations, abort


def test_no_slow_pass_ends_at_theta_tilde():
    s, ref = MLPSetup("sgd"), MLPSetup("sgd")
    update = SlowFastUpdate(s.model, inner_steps=2, alpha=0.5, optimizer=s.optimizer, slow_pass=False)
    m = update.step(s.one_pass)
    anchor = [p.detach().clone() for p in ref.trainable]
    ref.one_pass(), ref.one_pass()
    lerp_reference(ref, anchor, 0.5)
    assert s.passes == 2 and "sfpo/loss_slow" not in m
    assert_same(s.weights(), ref.weights())


@pytest.mark.parametrize("policy", ["carry", "restore"])
def test_abort_puts_theta0_back(policy):
    s = MLPSetup("adamw")
    update = SlowFastUpdate(s.model, inner_steps=3, alpha=0.8, optimizer=s.optimizer, optimizer_state=policy,
                            keep_anchor=True)
    update.step(s.one_pass)
    theta0, state0 = s.weights(), s.opt_state()
    update.begin()
    update.record_pass(s.one_pass())
    assert update.abort() is True
    assert update.phase == "idle"
    assert_same(s.weights(), theta0)
    if policy == "restore":
        assert_same_state(s.opt_state(), state0)
    # a plain step with keep_anchor can be aborted as well
    update.begin(active=False)
    s.one_pass()
    assert update.abort() is True
    assert_same(s.weights(), theta0)


def test_lifecycle_errors():
    s = MLPSetup("sgd")
    with pytest.raises(ValueError, match="inner_steps"):
        SlowFastUpdate(s.model, inner_steps=-1)
    for bad in (-0.1, 2.01, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha"):
            SlowFastUpdate(s.model, alpha=bad)
    with pytest.raises(ValueError, match="optimizer_state"):
        SlowFastUpdate(s.model, optimizer=s.optimizer, optimizer_state="interpolate")
    with pytest.raises(ValueError, match="lr_stepping"):
        SlowFastUpdate(s.model, optimizer=s.optimizer, lr_stepping="epoch")
    with pytest.raises(ValueError, match="needs the optimizer"):
        SlowFastUpdate(s.model, optimizer_state="reset")
    update = SlowFastUpdate(s.model, inner_steps=1, alpha=0.5, optimizer=s.optimizer)
    with pytest.raises(RuntimeError, match="begin"):
        update.record_pass(1.0)
    update.begin()
    with pytest.raises(RuntimeError, match="begin"):
        update.begin()
    with pytest.raises(RuntimeError, match="slow pass"):
        update.end()
    update.record_pass({"loss": torch.tensor(2.0)})
    update.record_pass(None)
    m = update.end()
    assert m["sfpo/loss_first_fast"] == 2.0 and math.isnan(m["sfpo/loss_slow"])


# ---------------------------------------------------------------------------------------- LR stepping


@pytest.mark.parametrize("lr_stepping", ["train_step", "optimizer_step"])
def test_lr_stepping(lr_stepping):
    K, M, steps = 2, 3, 3
    s = MLPSetup("sgd", mini_batches=M)
    sched = torch.optim.lr_scheduler.LambdaLR(s.optimizer, lambda n: 1.0 / (n + 1))
    lrs = []  # the learning rate of every optimizer step
    s.optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    update = SlowFastUpdate(s.model, inner_steps=K, alpha=0.5, optimizer=s.optimizer, scheduler=sched,
                            lr_stepping=lr_stepping)
    for i in range(steps):
        update.step(s.one_pass, active=i != 1)  # a switched-off step in the middle: one pass only
    n_opt = (K + 1) * M + M + (K + 1) * M
    assert len(lrs) == n_opt
    if lr_stepping == "train_step":
        assert sched.last_epoch == steps
        assert lrs == [0.1] * (K + 1) * M + [0.05] * M + [0.1 / 3] * (K + 1) * M
    else:
        assert sched.last_epoch == n_opt
        assert lrs == pytest.approx([0.1 / (n + 1) for n in range(n_opt)], rel=1e-12)
