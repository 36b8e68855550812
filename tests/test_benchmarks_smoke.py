"""Tiny-size smoke runs of the scripts in benchmarks/ that have no test of their own (issue 26: benchmarks rot
when nothing runs them). Each runs as a user would, in a fresh process at the smallest size its flags allow, and
must exit 0 and end with one JSON line holding the keys it promises. The timings in them are not checked: at these
sizes they are noise. Scripts tested elsewhere: bench_head, bench_memory, bench_handover (test_bench_head.py),
bench_trl (test_bench_trl.py), gpu_check (test_gpu_check.py), gpu/ (test_gpu_runner.py), reproduce
(test_reproduce_*.py). The shell scripts need environments CI builds separately (or a GPU): only their syntax is
checked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_bench(script: str, *args: str, tmp_path: Path, timeout: int = 300) -> tuple[dict, str]:
    """(the last stdout line as JSON, all of stdout) of ``benchmarks/<script> args``; temporary folders go under
    ``tmp_path``, so that runs leave nothing behind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], check=False, capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=timeout)  # checked below, with the script's stderr
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_bench_rollout(tmp_path):
    r, _ = run_bench("bench_rollout.py", "--hidden", "16", "--layers", "1", "--prompts", "2", "--n", "2",
                     "--max-new-tokens", "4", "--repeats", "1", tmp_path=tmp_path)
    assert r["params"] > 0 and r["hf_generate_tok_s"] > 0 and r["engine_tok_s"] > 0
    assert r["speedup"] == pytest.approx(r["engine_tok_s"] / r["hf_generate_tok_s"])


def test_bench_update_guard(tmp_path):
    r, _ = run_bench("bench_update_guard.py", "--hidden", "16", "--layers", "1", "--batch", "2", "--tokens", "4",
                     "--repeats", "1", tmp_path=tmp_path)
    assert r["threads"] == 1 and r["guard_wall_s"] > 0 and r["fwd_bwd_wall_s"] > 0
    assert r["ratio_wall"] == pytest.approx(r["guard_wall_s"] / r["fwd_bwd_wall_s"])


def test_bench_top_p(tmp_path):
    r, _ = run_bench("bench_top_p.py", "--vocab", "1000", "--hidden", "16", "--layers", "1", "--prompts", "2",
                     "--n", "2", "--max-new-tokens", "4", "--repeats", "1", tmp_path=tmp_path)
    assert r["vocab"] == 1000 and r["sequences"] == 4 and 1 <= r["steps"] <= 4
    assert r["same_tokens"] is True  # the top-k search must draw what the full sort drew
    assert r["generate_s_sort"] > 0 and r["generate_s_topk"] > 0 and r["filter_ms_topk"] > 0


def test_bench_update(tmp_path):
    r, _ = run_bench("bench_update.py", "--repeats", "1", "--reposition-repeats", "1", "--responses", "4",
                     "--group-size", "2", "--tokens", "4", "--prompt-tokens", "4", "--mini-batches", "1",
                     "--micro-batch", "2", "--layers", "1", "--hidden", "16", "--vocab", "100", "--inner-steps", "1",
                     tmp_path=tmp_path)
    assert r["inner_steps"] == 1 and r["responses"] == 4 and r["params"] > 0
    assert r["sfpo_over_grpo_pass"] > 0 and 0 < r["reposition_fraction"] < 1
    # the update keeps one anchor copy of the trainable weights alive, whatever the size
    assert r["extra_memory_ratio"] == pytest.approx(1.0, abs=0.05)


def test_lr_sweep_table(tmp_path):
    """On the run records the repository ships (docs/reproduction/records)."""
    r, out = run_bench("lr_sweep_table.py", tmp_path=tmp_path)
    assert r["sweep"] and set(r["best_lr"]) <= set(r["sweep"])
    for task, rows in r["sweep"].items():
        assert f"\n{task}:" in out
        assert all(row["n"] >= 1 and 0 <= row["best_val"] <= 1 for row in rows.values())


def test_bench_padding(tmp_path):
    """No size flag: its testbed shape is one rollout of the shipped policy (≈4 s), the rest length arithmetic."""
    r, _ = run_bench("bench_padding.py", tmp_path=tmp_path)
    assert r["testbed"]["rows"] == 32 * 8 and r["paper-like"]["rows"] == 256 * 8
    for shape in r.values():
        assert all(0 <= v < 1 for k, v in shape.items() if k not in ("rows", "mini_batches", "mean_row_tokens"))
    paper = r["paper-like"]
    assert paper["micro 1"] == 0 and paper["budget 8 rows"] < paper["micro 8"]  # what token budgets are for


def test_bench_prefix(tmp_path):
    """The prompt-once forward gives the full rows' log-probs and gradients (the script exits non-zero if not) on
    fewer token-rows."""
    r, _ = run_bench("bench_prefix.py", "--prompts", "2", "--generations", "3", "--tokens", "4", "--mini-batches", "2",
                     "--repeats", "1", tmp_path=tmp_path)
    p = r["shape"]["prompt_tokens"]
    assert r["token_rows"] == {"full": 6 * (p + 4), "prompt_once": 2 * p + 6 * 4}
    assert r["logprob_err"] < 1e-5 and r["grad_rel_err"] < 1e-4
    assert set(r["cpu_ratio"]) == {"pass", "old_logprobs"}


def test_bench_step(tmp_path):
    r, _ = run_bench("bench_step.py", "--steps", "1", "--warmup", "0", "rollout.num_prompts=2",
                     "rollout.group_size=2", tmp_path=tmp_path)
    assert (r["steps"], r["num_prompts"], r["group_size"]) == (1, 2, 2)
    assert r["grpo_step_s"] > 0 and r["sfpo_step_s"] > 0 and r["sfpo_over_grpo"] > 0


def test_demo_record(tmp_path):
    out = tmp_path / "record.json"
    r, _ = run_bench("demo_record.py", "--seeds", "0", "--out", str(out), "steps=2", "eval.every=1",
                     "eval.num_prompts=8", "eval.k=2", "rollout.num_prompts=4", "rollout.group_size=2",
                     tmp_path=tmp_path)
    assert r["out"] == str(out) and r["seeds"] == [0] and "steps=2" in r["command"]
    record = json.loads(out.read_text())
    assert list(record["runs"]) == ["0"] and record["meta"]["command"] == r["command"]
    assert set(record["runs"]["0"]["best_acc"]) == {"grpo", "grpo_4passes", "sfpo_noswitch"}


def test_phase_split(tmp_path):
    """Two steps (the first is dropped as warm-up) in chunks of 8 sequences (the engine_kwargs path)."""
    r, _ = run_bench("phase_split.py", "--steps", "2", "--chunks", "8", tmp_path=tmp_path)
    (row,) = r["rows"]
    assert r["steps"] == 2 and row["chunk"] == 8
    assert row["rollout"] > 0 and row["update"] > 0 and 0 < row["rollout_share_grpo"] < 1
    assert row["step_cost_ratio"] > 1 and row["completion_length"] > 0


@pytest.mark.slow
def test_bench_deepspeed(tmp_path):
    """ZeRO-1 only, one round: three processes (GRPO, GRPO K+1 passes, SFPO) under DeepSpeed's CPU accelerator."""
    pytest.importorskip("deepspeed")
    r, _ = run_bench("bench_deepspeed.py", "--stages", "1", "--rounds", "1", "--prompts", "2", "--generations", "2",
                     "--tokens", "4", "--optimizer-steps-per-pass", "1", "--steps", "1", "--warmup", "0",
                     "--threads", "1", tmp_path=tmp_path, timeout=600)
    assert set(r) >= {"zero1", "params", "deepspeed", "commit"} and "zero2" not in r
    z = r["zero1"]
    assert z["step_s"] > 0 and z["sfpo_over_grpo_passes"] > 0
    assert z["anchor_over_fp32_params"] == pytest.approx(1.0, abs=0.01)  # one fp32 copy of the (unsharded) masters


@pytest.mark.slow
def test_kernel_pinning(tmp_path):
    """One warm-start step and one SFPO step under each of the eight kernel settings (eight processes). From a
    one-step warm start the SFPO step leaves the weights bit-identical (measured: rl_hash == warm_hash in every
    setting; presumably no reward yet, so no advantage): this checks that the script runs, not what its 60 + 3
    steps measure."""
    r, _ = run_bench("kernel_pinning.py", "--warm-steps", "1", "--rl-steps", "1", tmp_path=tmp_path, timeout=600)
    assert (r["warm_steps"], r["rl_steps"]) == (1, 1) and len(r["rows"]) == 8
    assert r["deterministic_default"] is True  # the same setting twice: bit-identical weights
    assert all(isinstance(r[k], bool) for k in ("aten_isa_matters_with_mkl_fixed", "mkl_path_matters_with_aten_fixed",
                                                "onednn_isa_matters_when_pinned"))


@pytest.mark.verl
def test_bench_verl(tmp_path):
    """Needs verl (benchmarks/verl_env.sh runs the verl-marked tests, this one included, in its own env)."""
    pytest.importorskip("verl")
    r, _ = run_bench("bench_verl.py", "--hidden", "32", "--layers", "1", "--batch", "4", "--mini-batches", "2",
                     "--inner-steps", "1", "--steps", "1", tmp_path=tmp_path, timeout=600)
    assert r["steps"] == 1 and r["inner_steps"] == 1 and r["params"] > 0
    assert r["plain_s"] > 0 and r["sfpo_s"] > 0


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.sh")))
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(BENCH / script)], check=True)


def test_every_benchmark_has_a_smoke_run():
    """A new script in benchmarks/ gets a smoke run here or in a test of its own (named in this module's
    docstring)."""
    here = Path(__file__).read_text()
    tested = {p.name for p in BENCH.glob("*.py") if p.name in here or p.stem in here}
    assert tested == {p.name for p in BENCH.glob("*.py")}
