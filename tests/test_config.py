"""Configs: every shipped YAML loads, unknown keys and wrong types are errors naming the key, every field is
documented, and the CLI turns user errors into one line and exit status 2."""

from pathlib import Path

import pytest

from sfpo.cli import _field_docs, main
from sfpo.config import ConfigError, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_shipped_configs():
    assert any(p.name == "demo.yaml" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_yaml_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm:\n  alpah: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown config key algorithm\.alpah"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"unknown config key optim\.learning_rate"):
        load_config(None, ["optim.learning_rate=1e-3"])


@pytest.mark.parametrize("override, message", [
    ("steps=ten", r"steps: expected int, got str"),
    ("rollout.group_size=2.5", r"rollout.group_size: expected int"),
    ("algorithm.name=ppo", r"algorithm.name: 'ppo' is not one of \['grpo', 'sfpo'\]"),
    ("algorithm.alpha=2.5", r"alpha must lie in \[0, 2\]"),
    ("algorithm.outer_momentum=1.0", r"outer_momentum must lie in \[0, 0.99\]"),
    ("algorithm.inner_steps=-1", r"inner_steps \(K\) must be an integer >= 0"),
    ("algorithm.switch=fixed_step", r"algorithm.switch='fixed_step' needs switch_stop_step"),
    ("log.progress=maybe", r"log.progress: expected bool"),
    ("model.head_chunk_tokens=-1", r"model.head_chunk_tokens must be >= 0 \(tokens per chunk of the output head"),
    ("noequals", r"not of the form key.sub=value"),
])
def test_bad_values_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.name=grpo", "algorithm.outer_momentum=0.5"], "acts at SFPO's reposition"),
    (["algorithm.alpha_rule=kl_budget", "algorithm.outer_momentum=0.5"], "cannot be combined with alpha_rule"),
])
def test_outer_momentum_needs_plain_sfpo(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_overrides_parse_yaml_scalars():
    cfg = load_config(None, ["optim.lr=1e-3", "algorithm.clip_high=0.28", "algorithm.switch_stop_step=null",
                             "model.lora_target_modules=[q_proj]", "steps=7"])
    assert cfg.optim.lr == 1e-3 and cfg.algorithm.clip_high == 0.28 and cfg.steps == 7
    assert cfg.model.lora_target_modules == ["q_proj"]


def test_every_field_has_a_docstring():
    lines = _field_docs(TrainConfig)
    undocumented = [ln.split("\n")[0] for ln in lines if not ln.split("\n", 1)[1].strip()]
    assert undocumented == []
    assert any(ln.startswith("algorithm.inner_steps = 3") for ln in lines)


def test_cli_user_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1, 2]\n")
    assert main(["train", str(bad)]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", str(ROOT / "configs" / "demo.yaml"), "task.name=no_such_task",
                 f"output_dir={tmp_path / 'x'}"]) == 2
    assert "no_such_task" in capsys.readouterr().err


def test_model_path_that_is_not_a_causal_lm(tmp_path):
    from transformers import T5Config

    from sfpo.config import ModelConfig
    from sfpo.policy import PolicyLoadError, load_policy

    from transformers import T5ForConditionalGeneration

    with pytest.raises(PolicyLoadError, match="is not a saved model: the folder has no config.json"):
        load_policy(ModelConfig(path=str(tmp_path)), "arithmetic", {})
    t5 = T5Config(vocab_size=10, d_model=8, num_layers=1, num_heads=1, d_kv=8, d_ff=8)
    T5ForConditionalGeneration(t5).save_pretrained(tmp_path / "t5")
    from tiny import make_tokenizer

    make_tokenizer().save_pretrained(tmp_path / "t5")
    with pytest.raises(PolicyLoadError, match="is not a causal language model"):
        load_policy(ModelConfig(path=str(tmp_path / "t5")), "arithmetic", {})
