"""SFPOParams: one parameter set, one rule per value, and the same message at every front door (native config,
TRL's SFPOConfig, verl's sfpo group, the core update itself)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from sfpo.core import SFPOParams, SlowFastUpdate
from mlp_setup import MLPSetup

SRC = Path(__file__).resolve().parents[2] / "src"

BAD = [  # (field, bad value, the words of its rule)
    ("inner_steps", -1, "inner_steps (K) must be an integer >= 0"),
    ("inner_steps", 2.5, "inner_steps (K) must be an integer >= 0"),
    ("alpha", 2.5, "alpha must lie in [0, 2]"),
    ("alpha", -0.1, "alpha must lie in [0, 2]"),
    ("alpha", math.nan, "alpha must lie in [0, 2]"),
    ("outer_momentum", 1.0, "outer_momentum must lie in [0, 0.99]"),
    ("optimizer_state", "keep", "optimizer_state must be one of ('carry', 'reset', 'restore')"),
    ("switch", "sometimes", "switch must be one of ('entropy', 'fixed_step', 'never')"),
    ("switch_window", 1, "switch_window must be an integer >= 2"),
    ("switch_stop_step", -3, "switch_stop_step must be an integer >= 0"),
]


# values the native config's typed loader refuses before any rule (a float for an int, a name outside a Literal)
TYPED = {("inner_steps", 2.5): "expected int", ("optimizer_state", "keep"): "is not one of",
         ("switch", "sometimes"): "is not one of"}


def _verl_config_class():
    """sfpo.integrations.verl.config, loaded by path: the package's __init__ imports verl (not installed here),
    the config module itself imports nothing but sfpo.core.params."""
    spec = importlib.util.spec_from_file_location("verl_sfpo_config", SRC / "sfpo/integrations/verl/config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module.SFPOVerlConfig


def _message(excinfo) -> str:
    return str(excinfo.value)


@pytest.mark.parametrize("field, value, words", BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_every_front_door_gives_the_same_message(tmp_path, field, value, words):
    from sfpo.config import ConfigError, load_config
    from sfpo.integrations.trl import SFPOConfig

    with pytest.raises(ValueError) as core:
        SFPOParams(**{field: value})
    message = _message(core)
    assert words in message
    with pytest.raises(ConfigError) as native:
        load_config(None, [f"algorithm.{field}={value}"])
    if (field, value) in TYPED:  # the YAML loader checks types and choices of every key first, in its own words
        assert _message(native).startswith(f"algorithm.{field}: ") and TYPED[(field, value)] in _message(native)
    else:
        assert _message(native) == "algorithm." + message
    with pytest.raises(ValueError) as trl:
        SFPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **{field: value})
    assert _message(trl) == message
    with pytest.raises(ValueError) as verl:
        _verl_config_class().from_mapping({field: value})
    assert _message(verl) == "sfpo." + message
    if field in ("inner_steps", "alpha", "outer_momentum", "optimizer_state"):  # the update's own arguments
        s = MLPSetup("sgd")
        with pytest.raises(ValueError) as update:
            SlowFastUpdate(s.model, optimizer=s.optimizer, **{field: value})
        assert _message(update) == message


def test_the_defaults_are_the_papers_and_are_the_same_everywhere(tmp_path):
    from sfpo.config import load_config
    from sfpo.integrations.trl import SFPOConfig

    core = SFPOParams()
    assert (core.inner_steps, core.alpha, core.switch, core.switch_window, core.switch_threshold) == \
        (3, 0.8, "entropy", 30, 1.0)
    native = load_config(None, []).algorithm.sfpo_params
    trl = SFPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none").sfpo_params
    verl = _verl_config_class().from_mapping({}).sfpo_params
    assert native == core == trl == verl


def test_stage_one_runs_only_with_k_and_alpha_positive():
    assert SFPOParams().runs_stage_one
    assert not SFPOParams(alpha=0.0).runs_stage_one and not SFPOParams(inner_steps=0).runs_stage_one
    with pytest.raises(Exception):  # frozen: a parameter set is a value
        SFPOParams().alpha = 0.5  # type: ignore[misc]
