"""`sfpo demo` end to end with everything shrunk (a 5-step warm-start, 2 RL steps per method): the table, the
PNG and the final JSON line with the keys the README promises."""

import json

import pytest

from sfpo.cli import main

TINY = ["model.warmup_steps=5", "steps=2", "eval.every=1", "eval.num_prompts=8", "eval.k=2", "rollout.num_prompts=4",
        "rollout.group_size=2", "log.progress=false", "log.tensorboard=false"]


def test_demo_prints_table_png_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFPO_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", "--output-dir", str(tmp_path / "demo"), *TINY]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    for key in ("grpo_best_acc", "sfpo_best_acc", "rollouts_ratio", "wallclock_ratio", "grpo_step_s", "sfpo_step_s"):
        assert key in result
    assert 0.0 <= result["grpo_best_acc"] <= 1.0 and result["sfpo_step_s"] > 0
    assert any("best validation accuracy" in line for line in out)
    # a 5-step warm-start is not the shipped policy, and the demo says so instead of implying the record's start
    assert any("not the shipped policy" in line for line in out) and len(result["policy_sha256"]) == 64
    assert set(result["other_cores"]) == {"grpo", "sfpo"} and isinstance(result["cores_shared"], bool)
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "demo" / "grpo" / "metrics.jsonl").exists()
    assert list((tmp_path / "cache" / "testbed").iterdir())  # the warm-start went to the configured cache


def test_demo_says_whether_one_seed_lies_within_the_record(tmp_path):
    from sfpo.demo import DEMO_RECORD, record_context

    ctx = record_context(DEMO_RECORD, 0.02, 1.1)
    # the published record: SFPO − GRPO best validation +0.029 / +0.013 / +0.061, rollouts ratio 1.00 / 1.00 / 1.36
    assert ctx["seeds"] == 3 and ctx["record_acc_diff"] == [0.0126953125, 0.060546875]
    assert ctx["record_rollouts_ratio"] == [1.0, 1.3571428571428572]
    assert ctx["acc_diff_within"] and ctx["rollouts_ratio_within"]
    out = record_context(DEMO_RECORD, -0.017, None)
    assert out["acc_diff_within"] is False and out["rollouts_ratio_within"] is None
    assert record_context(tmp_path / "missing.json", 0.0, 1.0) is None


def test_core_sharing_counts_other_processes_busy_time():
    from sfpo.demo import core_sharing

    before = {"wall": 100.0, "cpu": 5.0, "busy": 1000.0}
    quiet = core_sharing(before, {"wall": 110.0, "cpu": 15.0, "busy": 1011.0})  # 1 s of others in 10 s
    assert quiet["other_cores"] == pytest.approx(0.1) and not quiet["shared"] and quiet["cpu_s"] == 10.0
    busy = core_sharing(before, {"wall": 110.0, "cpu": 12.0, "busy": 1027.0})  # 20 s of others in 10 s
    assert busy["other_cores"] == pytest.approx(2.0) and busy["shared"]
    unknown = core_sharing({**before, "busy": None}, {"wall": 110.0, "cpu": 15.0, "busy": None})
    assert unknown["other_cores"] is None and not unknown["shared"]


def test_table_names_the_shipped_start_quotes_the_record_and_warns_on_shared_cores():
    from sfpo.demo import DEMO_RECORD, format_table, record_context

    res = {"start_acc": 0.348, "grpo_best_acc": 0.55, "sfpo_best_acc": 0.56, "grpo_best_step": 100,
           "sfpo_best_step": 90, "grpo_rollouts_to_best": 25600, "sfpo_rollouts_to_grpo_best": 23040,
           "grpo_time_to_best": 50.0, "sfpo_time_to_grpo_best": 90.0, "grpo_step_s": 0.5, "sfpo_step_s": 0.6,
           "sfpo_active_step_s": 1.3, "sfpo_active_steps": 60, "rollouts_ratio": 1.11, "wallclock_ratio": 0.56,
           "rollouts_ratio_smoothed": 1.2, "wallclock_ratio_smoothed": 0.6,
           "policy": {"path": "x", "shipped": True, "sha256": "8bfb6e0e174d7601" + "0" * 48},
           "record": record_context(DEMO_RECORD, 0.01, 1.11), "cores_shared": True,
           "sharing": {"grpo": {"other_cores": 1.4}, "sfpo": {"other_cores": 0.2}}}
    text = format_table(res)
    assert "shipped testbed policy (sha256 8bfb6e0e174d7601…)" in text
    assert "+0.010 is OUTSIDE the record's per-seed range [+0.013, +0.061]" in text
    assert "rollouts ratio 1.11 is within its range [1.00, 1.36]" in text
    assert "WARNING: other processes shared the cores" in text and "grpo 1.4" in text
    quiet = format_table({**res, "cores_shared": False, "record": None})
    assert "WARNING" not in quiet and "record" not in quiet.split("sha256")[1]
