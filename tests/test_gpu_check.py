"""benchmarks/gpu_check.py rehearsed on CPU (--device cpu --tiny) end to end, on the bare stack a GPU machine may
have: torch + transformers only, with trl, vLLM, math-verify, datasets, peft and matplotlib made unimportable."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ["trl", "vllm", "math_verify", "datasets", "peft", "matplotlib", "tensorboard", "wandb"]

# Runs gpu_check as __main__ with an import hook that refuses the optional packages, as if not installed.
# Availability probes (importlib.util.find_spec, which transformers uses) answer None, imports fail.
RUNNER = """
import importlib.abc, importlib.util, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: (None if name.split(".")[0] in BLOCKED
                                                  else real_find_spec(name, *a, **k))
sys.meta_path.insert(0, Block())
script = sys.argv[2]
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
imported = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not imported, imported
"""


def test_gpu_check_rehearsal_on_cpu_without_optional_packages(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", RUNNER, ",".join(BLOCKED), str(ROOT / "benchmarks" / "gpu_check.py"),
                           str(out), "--device", "cpu", "--tiny", "--steps", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])  # the one JSON line ends the output
    assert last["ok"] is True and len(last["runs"]) == 8
    report = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.txt").read_text().startswith("gpu_check:")
    runs = {(r["variant"], r["algorithm"]): r for r in report["runs"]}
    variants = ("fp32", "bf16", "bf16+ckpt", "bf16+ckpt+full-logits")
    assert set(runs) == {(v, a) for v in variants for a in ("grpo", "sfpo")}
    for r in runs.values():
        for key in ("time/rollout", "time/old_logprobs", "time/update", "time/step", "update_tflop"):
            assert r[key] > 0, (r["variant"], r["algorithm"], key)
        assert r["completion_length"] > 0 and 0 <= r["padding_frac"] < 1
    # SFPO makes 4 passes where GRPO makes 1: its update FLOPs are 4x on the same shape and response lengths
    for v in variants:
        g, s = runs[(v, "grpo")], runs[(v, "sfpo")]
        if g["completion_length"] == s["completion_length"]:
            assert abs(s["update_tflop"] / g["update_tflop"] - 4.0) < 1e-9
        assert "time/fast" in s and "time/slow" in s and report["sfpo_over_grpo"][v]["update"] > 0
