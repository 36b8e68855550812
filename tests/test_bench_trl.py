"""benchmarks/bench_trl.py at a tiny size: TRL's GRPO and our GRPO and SFPO train side by side and the script ends
with one JSON line. It broke once unnoticed (our engine began stopping on the generation config's EOS list, and
the fixed-length assertion failed), so it runs here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("trl")


@pytest.mark.slow
def test_bench_trl_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_trl.py"), "--threads", "1", "--prompts",
                          "2", "--generations", "2", "--tokens", "4", "--steps", "1", "--warmup", "0", "--rounds",
                          "1", "--methods", "trl_grpo", "ours_grpo", "ours_sfpo"],
                         capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("trl_grpo", "ours_grpo", "ours_sfpo"):
        assert result[f"{name}_step_s"] > 0 and result[f"{name}_cpu_s"] > 0
    assert result["ours_grpo_over_trl_grpo"] > 0 and result["tokens"] == 4
