"""examples/trl_sfpo.py runs offline (--tiny) end to end and logs SFPO's metrics: the example cannot rot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_sfpo.py"


def test_tiny_example_trains_one_sfpo_step(tmp_path):
    cmd = [sys.executable, str(EXAMPLE), "--tiny", "--tiny_warmup_steps", "1", "--tiny_prompts", "64",
           "--output_dir", str(tmp_path / "out"), "--max_steps", "8", "--logging_steps", "8"]
    env = {**os.environ, "SFPO_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'sfpo/alpha': '0.8'" in proc.stdout and "'sfpo/drift_norm'" in proc.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()
