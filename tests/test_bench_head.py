"""Tiny-size smoke runs of benchmarks/bench_head.py, bench_memory.py and bench_handover.py: each runs and ends
with one JSON line. bench_head: the chunked head's peak is the weight's gradient plus about two chunks of logits
(what the Function is built to hold), the full path's the logits' several copies; and LiveBytes, which measures
both, counts new storages only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_memory import LiveBytes  # noqa: E402


def test_live_bytes_counts_new_storages_not_views_of_old_ones():
    w = torch.randn(1000, 100)
    with LiveBytes() as mode:
        v = w.t()[:10]  # a view: no new memory
        x = torch.ones(500, 100)  # 200,000 bytes
        y = x.mul_(2)  # in place: the same storage
        del x, y
        z = torch.zeros(250, 100)  # 100,000 bytes, while the ones are gone
    assert v.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()
    assert mode.peak == 200_000 and mode.current == 100_000
    del z


def test_bench_head_smoke():
    d, v, chunk = 16, 3000, 32
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_head.py"), "--shapes", f"{d}x{v}",
                          "--tokens", "64", "256", "--chunks", str(chunk), "--full-max-tokens", "128",
                          "--time-tokens", "64", "--repeats", "1"],
                         capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert "extrapolated" in out.stdout
    rows = {r["tokens"]: r for r in result["rows"]}
    assert not rows[64]["full_extrapolated"] and rows[256]["full_extrapolated"]
    mb = 2**20
    for r in rows.values():
        grad_w, logits_chunk = v * d * 4 / mb, chunk * v * 4 / mb
        # two chunk buffers (logits, softmax) beside the weight's gradient, and (tokens, d)-sized extras
        assert grad_w + 2 * logits_chunk <= r["chunked_peak_mb"] <= grad_w + 2 * logits_chunk + 0.1
        assert r["full_peak_mb"] > grad_w + 3 * r["tokens"] * v * 4 / mb  # logits, scaled copy, softmax, grads
        assert r["memory_ratio"] == r["full_peak_mb"] / r["chunked_peak_mb"]
        assert r["chunked_wall_s"] > 0 and r["full_cpu_s"] > 0
    assert rows[256]["memory_ratio"] > rows[64]["memory_ratio"] > 1


def test_bench_memory_smoke():
    """benchmarks/bench_memory.py at a tiny width: the chunked head keeps far fewer bytes per token outside the
    layers than full logits (which keep several (T, V) tensors)."""
    def run(chunk: int) -> dict:
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--hidden", "32", "--ffn",
                              "64", "--heads", "2", "--kv-heads", "1", "--vocab", "4000", "--tokens", "16", "32",
                              "--head-chunk-tokens", str(chunk)],
                             capture_output=True, text=True, timeout=300, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    full, chunked = run(0), run(8)
    assert chunked["head_chunk_tokens"] == 8 and full["head_chunk_tokens"] == 0
    for setting in ("fp32", "fp32+ckpt"):
        outside_full = full["activations"][setting]["per_token_outside_layers"]
        outside_chunked = chunked["activations"][setting]["per_token_outside_layers"]
        assert outside_full > 4000 * 4  # at least the float32 (T, V) logits kept for the backward
        assert outside_chunked < 4000 * 4 / 4  # a few hidden-state rows, no vocabulary-sized tensor
    assert chunked["state_bytes_per_param"]["none"]["total"] == pytest.approx(20.0, abs=0.5)


def test_bench_handover_smoke():
    """benchmarks/bench_handover.py at a tiny size: four settings, the handed-over ones without an old-log-prob
    forward."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_handover.py"), "--prompts", "2",
                          "--generations", "2", "--tokens", "4", "--micro-batch-size", "2", "--steps", "1"],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = {(r["algorithm"], r["handover"]): r for r in result["rows"]}
    assert set(rows) == {(a, h) for a in ("grpo", "sfpo") for h in (False, True)}
    for algo in ("grpo", "sfpo"):
        # the handed-over step has no forward in its old-log-prob phase: a fraction of the separate one's
        assert rows[(algo, True)]["old_logprobs_wall_s"] < rows[(algo, False)]["old_logprobs_wall_s"]
        assert result["step_cpu_ratio"][algo] > 0
