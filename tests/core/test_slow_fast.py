"""SlowFastUpdate: the "off" settings are exactly the base update, a hand trace of Algorithm 1, the anchor,
frozen parameters, optimizer-state policies, LR stepping, checkpoints in the middle of a step, and memory.

The base update is a real one: a 2-layer MLP classifier, cross-entropy, one pass = several mini-batch
optimizer steps over a fixed batch (SGD with momentum or AdamW). Runs are compared bit for bit (torch.equal):
every equivalence below is exact in floating point, not merely close.
"""

from __future__ import annotations

import copy
import gc
import io
import math

import pytest
import torch
from torch import nn

from sfpo.core import EntropySwitch, SlowFastUpdate

# ------------------------------------------------------------------------------------------------ helpers


class MLPSetup:
    """A 2-layer MLP classifier, a fixed batch and an optimizer; ``one_pass()`` is one pass of the base
    update: ``mini_batches`` optimizer steps over the batch. Equal arguments give equal bits."""

    def __init__(self, optimizer: str = "adamw", seed: int = 0, mini_batches: int = 3, frozen: bool = False,
                 hidden: int = 16, width: int = 6) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 3))
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if frozen:
            self.model[0].weight.requires_grad_(False)
        # A frozen tensor the pass itself changes (as a running statistic would): if the update anchored or
        # repositioned it, the reposition would pull it back towards θ0 and the tests would see it.
        self.frozen = nn.Parameter(torch.zeros(5, 7), requires_grad=False)
        self.model.register_parameter("stat", self.frozen)
        self.x = torch.randn(24, width, generator=g)
        self.y = torch.randint(0, 3, (24,), generator=g)
        self.mini_batches = mini_batches
        self.kind = optimizer
        self.optimizer = self.new_optimizer()
        self.passes = 0

    def new_optimizer(self) -> torch.optim.Optimizer:
        if self.kind == "adamw":
            return torch.optim.AdamW(self.trainable, lr=0.05, weight_decay=0.01)
        if self.kind == "sgd":  # with momentum, so that SGD has optimizer state as well
            return torch.optim.SGD(self.trainable, lr=0.1, momentum=0.9)
        raise ValueError(self.kind)

    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def one_pass(self) -> torch.Tensor:
        total = torch.zeros(())
        for idx in torch.arange(len(self.x)).chunk(self.mini_batches):
            self.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.frozen.add_(1.0)
        self.passes += 1
        return total / self.mini_batches

    def weights(self) -> list[torch.Tensor]:
        """Copies of the model's weights, trainable or not, without the statistic the passes count up."""
        return [p.detach().clone() for p in self.model.parameters() if p is not self.frozen]

    def opt_state(self) -> dict:
        return copy.deepcopy(self.optimizer.state_dict()["state"])

    def trainable_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.trainable)


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"tensor {i} differs: max |Δ| = {(x - y).abs().max():.3e}"


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-exact comparison of two ``optimizer.state_dict()["state"]``: moments and step counts."""
    assert sorted(a) == sorted(b), f"parameters with optimizer state differ: {sorted(a)} vs {sorted(b)}"
    for i in a:
        assert sorted(a[i]) == sorted(b[i]), f"state keys of parameter {i} differ"
        for k in a[i]:
            x, y = a[i][k], b[i][k]
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y, f"optimizer state {i}/{k} differs"


def live_storages() -> dict[int, tuple[int, torch.Tensor]]:
    """Every tensor storage the garbage collector can reach: data pointer → (bytes, a tensor on it).

    An accounting of memory independent of ``SlowFastUpdate.extra_bytes()``. The returned tensors keep those
    storages alive, so none of them can be freed and its address reused while a measurement is running."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):  # type(), not isinstance: no __class__ lookups on lazy modules
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = (storage.nbytes(), obj)
    return storages


def new_bytes(before: dict[int, tuple[int, torch.Tensor]], optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of the storages alive now that were not alive at ``before``, less those the optimizer's state
    holds (a "reset" replaces the state by a fresh one of the same size: the optimizer's, not the update's)."""
    now = live_storages()
    owned = set()
    if optimizer is not None:
        owned = {v.untyped_storage().data_ptr() for st in optimizer.state.values() for v in st.values()
                 if torch.is_tensor(v)}
    return sum(nbytes for ptr, (nbytes, _) in now.items() if ptr not in before and ptr not in owned)


def lerp_reference(setup: MLPSetup, anchor: list[torch.Tensor], alpha: float) -> None:
    """Stage II by hand on the trainable parameters: θ̃ = θ0 + α(θK − θ0), as θ.lerp(θ0, 1 − α)."""
    with torch.no_grad():
        for p, a in zip(setup.trainable, anchor):
            p.copy_(torch.lerp(p, a, 1.0 - alpha))


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
        phase, anchor = update.phase, [a.clone() for a in update._anchor]
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
    assert not any(a.shape in {(5, 7), (16, 6)} for a in update._anchor)
    assert not any(a.data_ptr() in frozen_ptrs for a in update._anchor)
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
    for bad in (-0.1, 1.5, math.nan):
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


# ----------------------------------------------------------------------- checkpoints in the middle of a step


def _train(s: MLPSetup, update: SlowFastUpdate, switch: EntropySwitch, sched, steps: int, start: int = 0,
           mid_step: bool = False, stop_at: tuple | None = None):
    """The trainer's loop through begin/record_pass/end. Returns a checkpoint (bytes) when it reaches
    ``stop_at = (step, phase, fast_done)``, else the per-step metrics. ``mid_step`` resumes inside ``start``."""
    log = []
    for step in range(start, steps):
        if not (mid_step and step == start):
            update.begin(switch.active)
        while update.phase in ("fast", "slow"):
            if stop_at == (step, update.phase, update.fast_done):
                buf = io.BytesIO()
                torch.save({"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
                            "scheduler": sched.state_dict(), "sfpo": update.state_dict(),
                            "switch": switch.state_dict()}, buf)
                return buf.getvalue()
            update.record_pass(s.one_pass())
        m = update.end()
        switch.update(step, m["sfpo/loss_slow"])  # the slow-pass loss stands in for the entropy
        log.append({**m, "lr": s.optimizer.param_groups[0]["lr"]})
    return log


def _fresh(policy: str, seed: int = 0):
    s = MLPSetup("adamw", seed=seed)
    sched = torch.optim.lr_scheduler.StepLR(s.optimizer, step_size=2, gamma=0.5)
    update = SlowFastUpdate(s.model, inner_steps=3, alpha=0.8, optimizer=s.optimizer, optimizer_state=policy,
                            scheduler=sched)
    # Two-sided, window 3: the falling loss gives z ≈ −1.2 at the third step, so SFPO switches off mid-run.
    switch = EntropySwitch(window=3, threshold=1.0, two_sided=True)
    return s, update, switch, sched


@pytest.mark.parametrize("policy", ["carry", "reset", "restore"])
@pytest.mark.parametrize("stop_at", [(1, "fast", 0), (1, "fast", 2), (1, "slow", 3), (2, "fast", 1)],
                         ids=["after-begin", "mid-fast", "after-reposition", "mid-fast-step2"])
def test_checkpoint_mid_step_resumes_exactly(policy, stop_at):
    steps = 5
    s, update, switch, sched = _fresh(policy)
    log = _train(s, update, switch, sched, steps)
    off = switch.switched_at
    assert off in (2, 3) and [m["sfpo/active"] for m in log] == [1.0] * (off + 1) + [0.0] * (steps - off - 1)

    s1, update1, switch1, sched1 = _fresh(policy)
    first = _train(s1, update1, switch1, sched1, steps, stop_at=stop_at)
    head = _train(*_fresh(policy), steps=stop_at[0])  # the steps completed before the checkpoint
    ckpt = torch.load(io.BytesIO(first), weights_only=True)  # a checkpoint must load without pickled code

    s2, update2, switch2, sched2 = _fresh(policy, seed=1)  # fresh objects, other initial weights
    s2.model.load_state_dict(ckpt["model"])
    s2.optimizer.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    update2.load_state_dict(ckpt["sfpo"])
    switch2.load_state_dict(ckpt["switch"])
    s2.x, s2.y = s.x, s.y  # the same rollout batch (seed 1 drew another)
    tail = _train(s2, update2, switch2, sched2, steps, start=stop_at[0], mid_step=True)

    assert_same(s2.weights(), s.weights())
    assert_same_state(s2.opt_state(), s.opt_state())
    assert switch2.state_dict() == switch.state_dict()
    # losses, drift norms, switch decisions, learning rates: all identical (timings aside)
    assert _no_time(head + tail) == _no_time(log)


def _no_time(log):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in log]


def test_state_dict_is_a_snapshot():
    """Training on after ``state_dict()`` must not change what it returned (the anchor and, under "restore",
    the optimizer state saved at θ0), so a checkpoint held in memory or written asynchronously stays valid."""
    s = MLPSetup("adamw")
    update = SlowFastUpdate(s.model, inner_steps=2, alpha=0.8, optimizer=s.optimizer, optimizer_state="restore")
    update.step(s.one_pass)
    update.begin()
    update.record_pass(s.one_pass())
    sd = update.state_dict()
    frozen_copy = copy.deepcopy(sd)
    update.record_pass(s.one_pass())  # the K-th fast pass: reposition, restore
    update.record_pass(s.one_pass())  # slow pass: AdamW updates its state in place
    update.end()
    assert_same(sd["anchor"], frozen_copy["anchor"])
    saved, then = sd["saved_optimizer_state"], frozen_copy["saved_optimizer_state"]
    assert sorted(saved) == sorted(then)
    for i in saved:
        for k in saved[i]:
            now, before = saved[i][k], then[i][k]
            now, before = (now[0], before[0]) if isinstance(now, tuple) else (now, before)
            assert torch.equal(now, before), f"saved optimizer state {i}/{k} changed after state_dict()"


# -------------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("policy", ["carry", "reset"])
def test_memory_one_copy_of_the_trainable_parameters(policy):
    """The update keeps one copy of the trainable weights alive, no more: counted by ``extra_bytes()`` and,
    independently, by scanning every live tensor storage (the frozen first layer, 4× larger, is not copied)."""
    s = MLPSetup("adamw", frozen=True, hidden=256, width=64)  # 16.4k frozen, 1.0k trainable parameters
    s.one_pass()  # AdamW's state exists before the measurement starts
    trainable = s.trainable_bytes()
    before = live_storages()
    update = SlowFastUpdate(s.model, inner_steps=3, alpha=0.8, optimizer=s.optimizer, optimizer_state=policy)
    during = []

    def base_pass():
        if update.phase == "slow" or update.fast_done == 1:  # a fast pass and the slow pass: scans are slow
            during.append(new_bytes(before, s.optimizer))
        return s.one_pass()

    for _ in range(2):
        update.step(base_pass)
    assert len(during) == 4
    assert update.extra_bytes() == trainable
    for extra in during + [new_bytes(before, s.optimizer)]:
        assert trainable <= extra <= 1.05 * trainable, f"{extra / trainable:.3f} × trainable bytes"


def test_memory_restore_holds_its_state_copy_only_during_the_fast_phase():
    s = MLPSetup("adamw", hidden=256, width=64)
    s.one_pass()
    trainable = s.trainable_bytes()
    state_bytes = 2 * trainable + 4 * len(s.trainable)  # exp_avg, exp_avg_sq, a 4-byte step per tensor
    update = SlowFastUpdate(s.model, inner_steps=2, alpha=0.8, optimizer=s.optimizer, optimizer_state="restore",
                            keep_anchor=True)
    seen = []

    def base_pass():
        seen.append((update.phase, update.extra_bytes()))
        return s.one_pass()

    update.step(base_pass)
    # fast phase: θ0 and the optimizer state at θ0; slow phase: the state copy went back into the optimizer
    assert seen == [("fast", trainable + state_bytes)] * 2 + [("slow", trainable)]
    assert update.extra_bytes() == trainable
    before = live_storages()
    # a plain step (keep_anchor, for abort) saves the state too; it must be released when the step ends
    update.step(base_pass, active=False)
    assert seen[-1] == ("slow", trainable + state_bytes)
    assert update.extra_bytes() == trainable
    assert new_bytes(before) == 0


def test_checkpoint_inside_a_guarded_step_can_still_abort():
    """With ``keep_anchor`` (the NaN guard) θ0 travels in a checkpoint taken anywhere inside a step, so a
    resumed run can still put the weights back to θ0."""
    s = MLPSetup("adamw")
    update = SlowFastUpdate(s.model, inner_steps=2, alpha=0.8, optimizer=s.optimizer, keep_anchor=True)
    theta0 = s.weights()
    update.begin()
    for _ in range(2):
        update.record_pass(s.one_pass())  # through the reposition: phase "slow"
    buf = io.BytesIO()
    torch.save({"model": s.model.state_dict(), "sfpo": update.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    s2 = MLPSetup("adamw", seed=1)
    s2.model.load_state_dict(ckpt["model"])
    update2 = SlowFastUpdate(s2.model, inner_steps=2, alpha=0.8, optimizer=s2.optimizer, keep_anchor=True)
    update2.load_state_dict(ckpt["sfpo"])
    assert update2.phase == "slow" and update2.abort() is True
    assert_same(s2.weights(), theta0)


def test_checkpoint_of_other_parameters_is_refused():
    s = MLPSetup("adamw")
    update = SlowFastUpdate(s.model, inner_steps=2, alpha=0.8, optimizer=s.optimizer)
    update.begin()
    sd = update.state_dict()
    other = SlowFastUpdate(MLPSetup("adamw", hidden=8).model, inner_steps=2, alpha=0.8)
    with pytest.raises(ValueError, match="anchor does not match"):
        other.load_state_dict(sd)
