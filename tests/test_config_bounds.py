"""Every numeric key of ``sfpo train --help-config`` has a bound: an out-of-range value is refused with exit 2 and one
line naming the key, before any folder is created or a model loaded; the value at the edge of the bound loads."""

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import sfpo.trainer
from sfpo import config
from sfpo.cli import main
from sfpo.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "configs" / "sfpo_arithmetic.yaml"

# key: (a value outside its bound, the value at the edge that must still load)
CASES = {
    "seed": (-1, 0),
    "steps": (0, 1),
    "max_rollouts": (-1, 0),
    "checkpoint_every": (-1, 0),
    "keep_checkpoints": (0, 1),
    "max_update_ratio": (-0.5, 0.0),
    "max_consecutive_skips": (-1, 0),
    "threads": (-2, 0),
    "model.warmup_steps": (-1, 0),
    "model.warmup_seed": (-1, 0),
    "model.lora_rank": (-4, 0),
    "model.lora_alpha": (0, 1),
    "model.head_chunk_tokens": (-1, 0),
    "task.reward_noise": (1.5, 1.0),
    "rollout.num_prompts": (0, 1),
    "rollout.group_size": (1, 2),
    "rollout.temperature": (0, 0.01),
    "rollout.top_p": (0, 1.0),
    "rollout.max_new_tokens": (0, 1),
    "rollout.max_prompt_tokens": (-1, 0),
    "algorithm.passes": (0, 1),
    "algorithm.inner_steps": (-1, 0),
    "algorithm.alpha": (2.5, 2.0),
    "algorithm.kl_budget": (0, 1e-6),
    "algorithm.outer_momentum": (1.0, 0.99),
    "algorithm.switch_window": (1, 2),
    "algorithm.switch_threshold": (".nan", -3.0),
    "algorithm.switch_stop_step": (-1, 0),
    "algorithm.clip_low": (1.0, 0.99),
    "algorithm.clip_high": (0, 0.01),
    "algorithm.kl_coef": (-0.1, 0.0),
    "algorithm.entropy_coef": (".inf", -0.01),
    "algorithm.clip_ratio_c": (1.0, 1.01),
    "optim.lr": (0, 1e-9),
    "optim.weight_decay": (-0.01, 0.0),
    "optim.betas": ("[0.9, 1.0]", "[0.0, 0.999]"),
    "optim.eps": (0, 1e-12),
    "optim.warmup_steps": (-1, 0),
    "optim.grad_clip": (-1.0, 0.0),
    "optim.mini_batches": (0, 1),
    "optim.micro_batch_size": (-1, 0),
    "optim.micro_batch_tokens": (-1, 0),
    "eval.every": (-1, 0),
    "eval.num_prompts": (0, 1),
    "eval.k": (0, 1),
    "eval.temperature": (-1.0, 0.0),
    "eval.top_p": (1.5, 1.0),
    "eval.test_num_prompts": (-1, 0),
}


def _numeric(tp) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) else [tp]
    return any(a in (int, float) or typing.get_args(a) == (float,) for a in args)


def _key_type(key: str):
    cls = config.TrainConfig
    *sections, name = key.split(".")
    for s in sections:
        cls = typing.get_type_hints(cls, vars(config))[s]
    return typing.get_type_hints(cls, vars(config))[name]


def _help_keys(capsys) -> list[str]:
    assert main(["train", "--help-config"]) == 0
    return re.findall(r"^(\S+) = ", capsys.readouterr().out, flags=re.M)


def test_every_numeric_key_of_help_config_has_a_case(capsys):
    numeric = [k for k in _help_keys(capsys) if _numeric(_key_type(k))]
    assert len(numeric) > 40
    assert sorted(numeric) == sorted(CASES), "a numeric config key needs its bound and a case here"


@pytest.fixture
def no_trainer(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a Trainer was built for a config that should have been refused")
    monkeypatch.setattr(sfpo.trainer, "Trainer", refuse)


@pytest.mark.parametrize("key", sorted(CASES))
def test_out_of_range_value_exits_2_with_one_line_and_no_folder(key, tmp_path, capsys, no_trainer):
    bad, _ = CASES[key]
    out = tmp_path / "run"
    assert main(["train", str(SHIPPED), f"{key}={bad}", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert key in lines[0] or (key.split(".")[-1] in lines[0] and key.startswith("algorithm.")), lines[0]
    assert "must" in lines[0]  # a rule and its reason, not a crash message
    assert not out.exists()


@pytest.mark.parametrize("key", sorted(CASES))
def test_the_value_at_the_edge_of_each_bound_loads(key):
    _, edge = CASES[key]
    extra = {"algorithm.switch_stop_step": ["algorithm.switch=fixed_step"],
             "algorithm.clip_low": ["algorithm.clip_high=0.2"]}.get(key, [])
    cfg = load_config(SHIPPED, [f"{key}={edge}", *extra])
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    assert value is not None


def test_more_mini_batches_than_responses_is_refused():
    with pytest.raises(ConfigError, match=r"optim.mini_batches=9 is more than the 8 responses"):
        load_config(SHIPPED, ["rollout.num_prompts=4", "rollout.group_size=2", "optim.mini_batches=9"])
    assert load_config(SHIPPED, ["rollout.num_prompts=4", "rollout.group_size=2", "optim.mini_batches=8"])


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_nan_and_inf_never_pass_a_bound(value):
    with pytest.raises(ConfigError, match=r"optim.lr must be > 0"):
        load_config(SHIPPED, [f"optim.lr={value}"])


def test_the_issue_cases_from_the_command_line(tmp_path):
    """As a user types them: one line each, exit 2, no traceback, no folder (one process for all)."""
    cases = ["algorithm.inner_steps=-1", "rollout.max_new_tokens=0", "rollout.temperature=0",
             "rollout.group_size=1", "optim.lr=0", "steps=0"]
    code = ("import sys\nfrom sfpo.cli import main\n"
            f"for case in {cases!r}:\n"
            f"    print(main(['train', {str(SHIPPED)!r}, case, 'output_dir={tmp_path / 'run'}']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.stdout.split() == ["2"] * len(cases), res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == len(cases) and all(ln.startswith("error: ") for ln in lines), res.stderr
    for case, line in zip(cases, lines):
        assert case.split("=")[0].split(".")[-1] in line, line
    assert not (tmp_path / "run").exists()
