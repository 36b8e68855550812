"""sfpo.core.reference.sfpo_step, the few-line reading of Algorithm 1, is the stateful SlowFastUpdate bit for bit
(weights and optimizer state) wherever both apply: the reference a reader checks the class against."""

from __future__ import annotations

import pytest

from mlp_setup import MLPSetup, assert_same, assert_same_state
from sfpo.core import SlowFastUpdate
from sfpo.core.reference import sfpo_step


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("inner_steps, alpha", [(3, 0.8), (1, 0.5), (2, 1.5), (3, 0.0), (0, 0.8)])
def test_the_reference_step_is_the_update(kind, inner_steps, alpha):
    ours, ref = MLPSetup(kind), MLPSetup(kind)
    update = SlowFastUpdate(ours.model, inner_steps=inner_steps, alpha=alpha, optimizer=ours.optimizer)
    for _ in range(3):
        update.step(ours.one_pass)
        sfpo_step(list(ref.model.parameters()), ref.one_pass, inner_steps, alpha)
    assert ours.passes == ref.passes == 3 * (inner_steps + 1 if alpha > 0 and inner_steps > 0 else 1)
    assert_same(ours.weights(), ref.weights())
    assert_same_state(ours.opt_state(), ref.opt_state())


def test_the_reference_would_see_a_wrong_reposition():
    """The comparison can fail: the same step with another α gives other weights."""
    ours, ref = MLPSetup("adamw"), MLPSetup("adamw")
    SlowFastUpdate(ours.model, inner_steps=3, alpha=0.8, optimizer=ours.optimizer).step(ours.one_pass)
    sfpo_step(list(ref.model.parameters()), ref.one_pass, 3, 0.7)
    with pytest.raises(AssertionError):
        assert_same(ours.weights(), ref.weights())
