"""The switch-off rules: the official entropy z-score rule on hand-made series (one- and two-sided), its
boundaries (not before ω values, z exactly at τ, NaN ignored), permanence, the fixed stop step, checkpoints."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from sfpo.core import EntropySwitch, FixedStepSwitch, NeverSwitch, make_switch
from sfpo.core.switch import entropy_zscore

# ω = 4, τ = 1. The z-score of the newest entropy over the last ω (population std, window includes it):
#   step 2: [1, 1, 5]     z = (5 − 7/3) / 1.8856 = +1.414  — only 3 values: must NOT fire yet
#   step 3: [1, 1, 5, 3]  z = (3 − 2.5) / √2.75  = +0.302
#   step 4: [1, 5, 3, 0]  z = (0 − 2.25) / √3.6875 = −1.172 — two-sided fires here
#   step 5: [5, 3, 0, 6]  z = (6 − 3.5) / √5.25  = +1.091 — one-sided fires here
SERIES = [1.0, 1.0, 5.0, 3.0, 0.0, 6.0, 1.0, 1.0]


def run(switch, series):
    """Feed a series as the trainer does (update after each step); return the active flag before each step."""
    flags = []
    for step, h in enumerate(series):
        flags.append(switch.active)
        switch.update(step, h)
    return flags


def test_official_rule_one_sided_fires_on_an_entropy_rise():
    sw = EntropySwitch(window=4, threshold=1.0)
    assert run(sw, SERIES) == [True] * 6 + [False] * 2  # step 5's entropy turns step 6 on to a plain step
    assert sw.switched_at == 5
    assert sw.last_z == pytest.approx(2.5 / math.sqrt(5.25), abs=1e-9)
    assert sw.metrics() == {"sfpo/switch_on": 0.0, "sfpo/entropy_z": sw.last_z}


def test_two_sided_also_fires_on_a_drop():
    sw = EntropySwitch(window=4, threshold=1.0, two_sided=True)
    assert run(sw, SERIES) == [True] * 5 + [False] * 3
    assert sw.switched_at == 4
    assert sw.last_z == pytest.approx(-2.25 / math.sqrt(3.6875), abs=1e-9)


def test_not_before_window_values_exist():
    sw = EntropySwitch(window=4, threshold=1.0)
    run(sw, SERIES[:3])
    assert sw.active and sw.last_z is None  # z would be 1.41 over 3 values, but ω = 4 have not been seen
    assert EntropySwitch(window=3, threshold=1.0).update(2, 5.0) is True  # a lone value is no evidence
    sw3 = EntropySwitch(window=3, threshold=1.0)
    run(sw3, SERIES[:3])
    assert sw3.switched_at == 2  # with ω = 3 the same three values do fire


def test_threshold_is_inclusive():
    window = [1.0, 1.0, 5.0, 3.0]
    z = entropy_zscore(window)
    assert z == pytest.approx(0.5 / math.sqrt(2.75), abs=1e-9)
    at = EntropySwitch(window=4, threshold=z)
    run(at, window)
    assert at.switched_at == 3  # z ≥ τ
    above = EntropySwitch(window=4, threshold=math.nextafter(z, math.inf))
    run(above, window)
    assert above.active


def test_zscore_against_statistics_module():
    rng = random.Random(0)
    for _ in range(50):
        w = [rng.uniform(0, 3) for _ in range(rng.randint(2, 40))]
        want = (w[-1] - statistics.fmean(w)) / (statistics.pstdev(w) + 1e-9)
        assert entropy_zscore(w) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert entropy_zscore([2.0] * 5) == 0.0  # a flat window: std 0, z 0 (the 1e-9 avoids 0/0)


def test_random_series_fire_where_the_rule_says():
    """The first step whose last-ω window has z ≥ τ, computed independently, for many random walks."""
    rng = random.Random(1)
    for _ in range(30):
        omega, tau, two = rng.randint(3, 12), rng.uniform(0.5, 2.0), rng.random() < 0.5
        h = [1.0]
        for _ in range(60):
            h.append(h[-1] + rng.gauss(0, 0.1))
        expect = None
        for i in range(omega - 1, len(h)):
            w = h[i - omega + 1:i + 1]
            z = (w[-1] - statistics.fmean(w)) / (statistics.pstdev(w) + 1e-9)
            if (abs(z) if two else z) >= tau:
                expect = i
                break
        sw = EntropySwitch(window=omega, threshold=tau, two_sided=two)
        run(sw, h)
        assert sw.switched_at == expect


def test_off_is_permanent():
    sw = EntropySwitch(window=4, threshold=1.0)
    run(sw, SERIES[:6])
    history, z = list(sw.history), sw.last_z
    for step in range(6, 40):
        assert sw.update(step, 1.0) is False  # a flat entropy afterwards does not turn SFPO back on
    assert not sw.active and sw.switched_at == 5
    assert list(sw.history) == history and sw.last_z == z  # nothing is recorded once off


def test_nan_and_missing_entropy_are_ignored():
    """A NaN (or missing) entropy is no evidence: not appended, the window is as if the step had no value."""
    with_gaps = [1.0, math.nan, 1.0, None, 5.0, math.inf, 3.0, 0.0, 6.0]
    sw = EntropySwitch(window=4, threshold=1.0)
    run(sw, with_gaps)
    assert sw.switched_at == 8  # the 6th finite value, as step 5 of SERIES
    assert list(sw.history) == [5.0, 3.0, 0.0, 6.0]


def test_fixed_step_runs_sfpo_on_steps_before_stop_step():
    assert run(FixedStepSwitch(3), [None] * 6) == [True, True, True, False, False, False]
    sw = FixedStepSwitch(3)
    run(sw, [None] * 6)
    assert sw.switched_at == 2  # decided after step 2, so step 3 is the first plain step
    assert run(FixedStepSwitch(1), [None] * 3) == [True, False, False]
    off = FixedStepSwitch(0)
    assert run(off, [None] * 3) == [False] * 3 and off.switched_at == 0
    with pytest.raises(ValueError, match="stop_step"):
        FixedStepSwitch(-1)
    assert run(NeverSwitch(), [9.0] * 50) == [True] * 50


@pytest.mark.parametrize("cut", [2, 3, 5])
def test_entropy_switch_state_dict_round_trip_mid_series(cut):
    """Checkpoint after ``cut`` steps (through JSON, as a plain-data checkpoint would), resume in a fresh object:
    the same decisions and state as an uninterrupted run."""
    whole = EntropySwitch(window=4, threshold=1.0)
    flags = run(whole, SERIES)
    first = EntropySwitch(window=4, threshold=1.0)
    head = run(first, SERIES[:cut])
    resumed = EntropySwitch(window=4, threshold=1.0)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    tail = []
    for step, h in enumerate(SERIES[cut:], start=cut):
        tail.append(resumed.active)
        resumed.update(step, h)
    assert head + tail == flags
    assert resumed.state_dict() == whole.state_dict()


def test_fixed_step_state_dict_and_name_check():
    sw = FixedStepSwitch(2)
    run(sw, [None] * 3)
    fresh = FixedStepSwitch(2)
    fresh.load_state_dict(sw.state_dict())
    assert not fresh.active and fresh.switched_at == 1
    with pytest.raises(ValueError, match="'fixed_step' switch, this run uses 'entropy'"):
        EntropySwitch().load_state_dict(sw.state_dict())


def test_make_switch():
    sw = make_switch("entropy", window=7, threshold=2.0, two_sided=True)
    assert isinstance(sw, EntropySwitch) and (sw.window, sw.threshold, sw.two_sided) == (7, 2.0, True)
    assert make_switch("entropy").window == 30 and make_switch("entropy").threshold == 1.0  # paper's ω, τ
    assert isinstance(make_switch("fixed_step", stop_step=4), FixedStepSwitch)
    assert isinstance(make_switch("never"), NeverSwitch)
    with pytest.raises(ValueError, match="needs stop_step"):
        make_switch("fixed_step")
    with pytest.raises(ValueError, match=r"unknown switch rule 'kl'.*entropy.*fixed_step.*never"):
        make_switch("kl")
    with pytest.raises(ValueError, match="window"):
        EntropySwitch(window=1)
