"""examples/trl_sfpo.py runs offline (--tiny) end to end and logs SFPO's metrics: the example cannot rot."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_sfpo.py"


def test_tiny_example_trains_one_sfpo_step(tmp_path):
    cmd = [sys.executable, str(EXAMPLE), "--tiny", "--tiny_warmup_steps", "1", "--tiny_prompts", "64",
           "--output_dir", str(tmp_path / "out"), "--max_steps", "8", "--logging_steps", "4"]
    env = {**os.environ, "SFPO_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'sfpo/alpha': '0.8'" in proc.stdout and "'sfpo/drift_norm'" in proc.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert re.findall(r"'learning_rate': '([^']*)'", proc.stdout) == ["0.0001", "0.0001"]


@pytest.mark.parametrize("tiny", [[], ["--tiny"]])
def test_example_holds_the_lr_constant_like_the_paper(tmp_path, tiny):
    """TRL's default schedule decays the LR linearly to 0; the paper's runs keep it constant."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("trl_sfpo_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = [*tiny, "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]  # parsing checks the device
    _, training_args, _ = example.make_parser(argv).parse_args_and_config(argv)
    assert training_args.lr_scheduler_type == "constant"
    assert example.make_parser(argv).parse_args_and_config(
        [*argv, "--lr_scheduler_type", "cosine"])[1].lr_scheduler_type == "cosine"  # still a flag
