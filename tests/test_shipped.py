"""Shipped configs by name and the version, as the CLI offers them (tests/test_package.py runs them from a wheel)."""

from pathlib import Path

import pytest

from sfpo.cli import main
from sfpo.shipped import CONFIGS_DIR, config_names, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_yaml_has_a_name_and_names_resolve_like_paths():
    names = config_names()
    assert len(names) == len(list((ROOT / "configs").rglob("*.yaml")))  # in a checkout: configs/ itself
    assert CONFIGS_DIR == ROOT / "configs"
    assert names["sfpo_arithmetic"] == ROOT / "configs" / "sfpo_arithmetic.yaml"
    assert resolve_config("paper/sfpo_qwen2.5-math-1.5b") == ROOT / "configs" / "paper" / "sfpo_qwen2.5-math-1.5b.yaml"
    assert resolve_config("demo.yaml") == resolve_config("configs/demo.yaml").resolve() == names["demo"]
    with pytest.raises(FileNotFoundError, match="--list-configs"):
        resolve_config("no_such_config")


def test_cli_lists_configs_shows_version_and_refuses_an_unknown_name(capsys):
    assert main(["train", "--list-configs"]) == 0
    out = capsys.readouterr().out
    assert "  sfpo_arithmetic\n" in out and "  paper/grpo_qwen2.5-math-1.5b\n" in out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("sfpo ")
    assert main(["train", "no_such_config"]) == 2
    assert "does not exist, and it is not a shipped config's name" in capsys.readouterr().err


def test_train_eval_and_demo_leave_deepspeed_trl_and_verl_unimported(tmp_path):
    """Those three are imported only by the commands that use them; DeepSpeed's accelerator warning was the first
    line `sfpo demo` printed (accelerate imports DeepSpeed inside save_pretrained whenever it is installed)."""
    import subprocess
    import sys

    code = """
import sys
from sfpo.cli import main
out = sys.argv[1]
tiny = ["steps=1", "eval.every=1", "eval.num_prompts=4", "eval.k=1", "rollout.num_prompts=2",
        "rollout.group_size=2", "log.progress=false", "log.tensorboard=false", "log.plot=false"]
assert main(["train", "sfpo_arithmetic", f"output_dir={out}/run", *tiny]) == 0
assert main(["eval", f"{out}/run", "--task", "arithmetic", "--num-prompts", "4", "--k", "1"]) == 0
assert main(["demo", "--output-dir", f"{out}/demo", *tiny]) == 0
print("LOADED", sorted({m.split(".")[0] for m in sys.modules} & {"deepspeed", "trl", "verl"}))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout and "Setting accelerator" not in proc.stderr
