"""SlowFastUpdate state: checkpoints in the middle of a step resume bit for bit, and the memory it holds is one
copy of the trainable parameters (plus the optimizer state under "restore", during the fast phase only). Same
MLP base update as test_slow_fast.py (mlp_setup.py).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from sfpo.core import EntropySwitch, SlowFastUpdate
from mlp_setup import MLPSetup, assert_same, assert_same_state, live_storages, new_bytes

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
