"""Group advantages against hand computations, the group layout, and the errors for bad input."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from sfpo.core import ADVANTAGES, compute_advantages, drgrpo_advantages, grpo_advantages, rloo_advantages
from sfpo.core.advantages import batch_std_advantages

EPS = 1e-6
# Three prompts × G = 4 responses, laid out group by group (rows i*G .. i*G+G-1 belong to prompt i).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0,  # mean 0.5, deviations ±0.5, sample std √(4·0.25/3) = √(1/3)
                        1.0, 1.0, 1.0, 1.0,  # all equal: no signal, advantage 0 under every estimator
                        3.0, 1.0, 2.0, 2.0])  # mean 2, deviations +1, −1, 0, 0, sample std √(2/3)
DEV = [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 1, -1, 0, 0]


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-6, atol=1e-7)


def test_grpo():
    """A = (r − mean) / (sample std + ε): 0.5 / √(1/3) = 0.8660, 1 / √(2/3) = 1.2247."""
    s1, s3 = math.sqrt(1 / 3) + EPS, math.sqrt(2 / 3) + EPS
    close(grpo_advantages(REWARDS, 4), [d / s for d, s in zip(DEV, [s1] * 4 + [1.0] * 4 + [s3] * 4)])
    assert grpo_advantages(REWARDS, 4)[0].item() == pytest.approx(0.8660254, abs=2e-6)


def test_drgrpo_only_centres():
    close(drgrpo_advantages(REWARDS, 4), DEV)


def test_batch_std_scales_by_the_std_of_the_whole_batch():
    std = statistics.stdev(REWARDS.tolist())  # 0.83485 over all 12 rewards (sample std)
    close(batch_std_advantages(REWARDS, 4), [d / (std + EPS) for d in DEV])


def test_rloo_is_the_leave_one_out_baseline():
    """A_i = r_i − mean of the other G−1 rewards; e.g. r_0 = 1 against (0 + 0 + 1)/3: 2/3."""
    r = REWARDS.view(3, 4).tolist()
    by_hand = [ri - (sum(g) - ri) / 3 for g in r for ri in g]
    assert by_hand[0] == pytest.approx(2 / 3)
    close(rloo_advantages(REWARDS, 4), by_hand)
    close(rloo_advantages(REWARDS, 4), [d * 4 / 3 for d in DEV])


def test_groups_are_contiguous_rows():
    """[1, 0, 1, 0] is two mixed groups with G = 2 but one group with G = 4 — same numbers, other layout."""
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    close(drgrpo_advantages(r, 2), [0, 0, 0, 0])  # groups (1, 1) and (0, 0)
    close(drgrpo_advantages(r, 4), [0.5, 0.5, -0.5, -0.5])


def test_dispatch_by_name_and_dtypes():
    assert sorted(ADVANTAGES) == ["batch_std", "drgrpo", "grpo", "rloo"]
    for name, fn in ADVANTAGES.items():
        assert torch.equal(compute_advantages(name, REWARDS, 4), fn(REWARDS, 4))
    ints = torch.tensor([1, 0, 0, 1])  # integer 0/1 rewards are fine, the result is float
    for fn in ADVANTAGES.values():
        assert torch.equal(fn(ints, 4), fn(ints.float(), 4))
    assert compute_advantages("grpo", ints, 4).dtype == torch.float32
    close(grpo_advantages(torch.tensor([0.3, 0.7]), 1), [0.0, 0.0])  # G = 1: nothing to compare against


def test_errors():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*batch_std.*drgrpo.*grpo.*rloo"):
        compute_advantages("ppo", REWARDS, 4)
    with pytest.raises(ValueError, match=r"rewards must be 1-D .* got shape \(3, 4\)"):
        grpo_advantages(REWARDS.view(3, 4), 4)
    with pytest.raises(ValueError, match="12 rewards cannot be split into groups of 5"):
        compute_advantages("grpo", REWARDS, 5)
    with pytest.raises(ValueError, match="groups of 0"):
        drgrpo_advantages(REWARDS, 0)
    with pytest.raises(ValueError, match="RLOO needs group_size >= 2"):
        rloo_advantages(REWARDS, 1)
