"""`sfpo demo` end to end with everything shrunk (the shipped policy, 2 RL steps per method, 8 validation prompts):
the three methods ran from the same start with the same settings but their own, the table, the PNG, the final JSON
line; a record is read only when it was made with exactly the demo's settings."""

import json

import pytest

from sfpo.cli import main

TINY = ["steps=2", "eval.every=1", "eval.num_prompts=8", "eval.k=2", "rollout.num_prompts=4", "rollout.group_size=2",
        "log.progress=false", "log.tensorboard=false"]
METHOD_KEYS = {"algorithm.name", "algorithm.passes", "algorithm.switch"}  # what the three runs may differ in


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from sfpo.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(str(out), overrides=TINY)


def test_demo_prints_three_methods_png_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFPO_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", "--output-dir", str(tmp_path / "demo"), "model.warmup_steps=5", *TINY]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert set(result["methods"]) == {"grpo", "grpo_4passes", "sfpo_noswitch"}
    header = next(line for line in out if line.startswith("|"))
    assert "GRPO (grpo)" in header and "GRPO-4 (grpo_4passes)" in header and "SFPO (sfpo_noswitch)" in header
    assert any(line.startswith("SFPO vs GRPO-4:") for line in out)
    # a 5-step warm-start is not the shipped policy, and the demo says so instead of implying the record's start
    assert any("not the shipped policy" in line for line in out) and len(result["policy_sha256"]) == 64
    assert result["lr"] == 3e-5 and result["steps"] == 2
    assert set(result["other_cores"]) == {"grpo", "grpo_4passes", "sfpo_noswitch"}
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "cache" / "testbed").iterdir())  # the warm-start went to the configured cache
    assert any(line.startswith("The grid (152 runs; arithmetic") for line in out)  # quoted from results.json


def test_demo_runs_are_like_for_like(demo):
    from sfpo.metrics import read_metrics

    out, res = demo
    settings = res["settings"]["methods"]
    base = settings["grpo"]
    for m, s in settings.items():  # the same run but for the method's own keys
        assert {k for k in base if base[k] != s[k]} <= METHOD_KEYS | {"algorithm.inner_steps", "algorithm.alpha"}
    assert settings["grpo_4passes"]["algorithm.passes"] == 4 and settings["grpo"]["algorithm.passes"] == 1
    assert settings["sfpo_noswitch"]["algorithm.switch"] == "never" and base["optim.lr"] == 3e-5
    assert res["policy"]["shipped"] and res["policy"]["sha256"] == res["settings"]["policy_sha256"]
    runs = {m: read_metrics(out / m) for m in settings}
    # one start: the same validation accuracy at step 0 for all three (the same policy, seed and prompts)
    starts = {m: next(r["val/accuracy"] for r in recs if r["step"] == 0) for m, recs in runs.items()}
    assert len(set(starts.values())) == 1 and res["start_acc"] == starts["grpo"] > 0
    for m, recs in runs.items():
        assert res["methods"][m]["best_acc"] == max(r["val/accuracy"] for r in recs if "val/accuracy" in r)
        assert sum(1 for r in recs if "rollouts" in r) == 2
    assert res["evals"] == 3  # steps 0, 1, 2
    assert all(r.get("sfpo/active") == 1.0 for r in runs["sfpo_noswitch"] if "loss" in r)
    assert all("sfpo/active" not in r for r in runs["grpo_4passes"])


def test_record_is_read_only_with_the_demos_settings(demo, tmp_path):
    from sfpo.demo import format_table, make_record, record_context

    _, res = demo
    path = tmp_path / "record.json"
    assert record_context(path, res)["status"] == "missing"
    path.write_text(json.dumps(make_record([res, {**res, "seed": 7}])))
    ctx = record_context(path, res)
    assert ctx["status"] == "compared" and ctx["seeds"] == ["0", "7"]
    assert ctx["same_seed_in_record"] and ctx["same_seed_matches"]
    assert ctx["sfpo_vs_grpo.best_acc_diff"]["within"] is True
    assert "exactly these settings" in format_table({**res, "record": ctx})
    other = json.loads(json.dumps(res["settings"]))
    other["methods"]["grpo"]["optim.lr"] = 1e-4
    path.write_text(json.dumps(make_record([{**res, "settings": other}])))
    ctx = record_context(path, res)
    assert ctx == {"status": "other settings", "record": "record.json", "differs": ["grpo: optim.lr"]}
    assert "made with other settings (grpo: optim.lr)" in format_table({**res, "record": ctx})
    with pytest.raises(ValueError, match="different settings"):
        make_record([res, {**res, "settings": other}])


def test_core_sharing_counts_other_processes_busy_time():
    from sfpo.demo import core_sharing

    before = {"wall": 100.0, "cpu": 5.0, "busy": 1000.0}
    quiet = core_sharing(before, {"wall": 110.0, "cpu": 15.0, "busy": 1011.0})  # 1 s of others in 10 s
    assert quiet["other_cores"] == pytest.approx(0.1) and not quiet["shared"] and quiet["cpu_s"] == 10.0
    busy = core_sharing(before, {"wall": 110.0, "cpu": 12.0, "busy": 1027.0})  # 20 s of others in 10 s
    assert busy["other_cores"] == pytest.approx(2.0) and busy["shared"]
    unknown = core_sharing({**before, "busy": None}, {"wall": 110.0, "cpu": 15.0, "busy": None})
    assert unknown["other_cores"] is None and not unknown["shared"]


def test_table_reads_ratios_and_noise_and_warns_on_shared_cores():
    from sfpo.demo import format_table

    def method(acc, step_s, to_grpo, to_g4):
        return {"best_acc": acc, "best_step": 40, "step_s": step_s, "to_grpo_best": to_grpo,
                "to_grpo_4passes_best": to_g4}

    res = {"start_acc": 0.316, "steps": 60, "val_prompts": 256, "evals": 13, "methods": {
        "grpo": method(0.52, 1.5, {"rollouts": 10240, "time": 60.0}, {"rollouts": None, "time": None}),
        "grpo_4passes": method(0.56, 3.8, {"rollouts": 6400, "time": 90.0}, {"rollouts": 12800, "time": 180.0}),
        "sfpo_noswitch": method(0.55, 3.8, {"rollouts": 7680, "time": 110.0}, {"rollouts": None, "time": None})},
        "sfpo_vs_grpo": {"rollouts_ratio": 10240 / 7680, "wallclock_ratio": 60 / 110, "best_acc_diff": 0.03},
        "sfpo_vs_grpo_4passes": {"rollouts_ratio": None, "wallclock_ratio": None, "best_acc_diff": -0.01},
        "policy": {"path": "x", "shipped": True, "sha256": "8bfb6e0e174d7601" + "0" * 48},
        "record": {"status": "missing"}, "grid": "The grid says so.", "cores_shared": True,
        "sharing": {"grpo": {"other_cores": 1.4}, "grpo_4passes": {"other_cores": 0.2},
                    "sfpo_noswitch": {"other_cores": 0.1}}}
    text = format_table(res)
    assert ("SFPO vs GRPO: best validation +0.030; to reach its best, GRPO ÷ SFPO rollouts 1.33, wall-clock 0.55"
            in text)
    assert "SFPO vs GRPO-4: best validation -0.010; to reach its best, GRPO-4 ÷ SFPO rollouts not reached" in text
    assert "noisy by up to ±0.031 (one sd), and the best of 13 noisy evaluations" in text  # 1 / (2 √256)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in text.splitlines()
            if line.startswith("| ")}
    assert rows["rollouts to reach GRPO-4's best"] == ["not reached", "12800", "not reached"]
    assert rows["median step time (s)"] == ["1.50", "3.80", "3.80"]
    assert "shipped testbed policy (sha256 8bfb6e0e174d7601…)" in text and "No record made" in text
    assert "The grid says so." in text and "WARNING: other processes shared the cores" in text and "grpo 1.4" in text
    assert "WARNING" not in format_table({**res, "cores_shared": False})


def test_demo_record_script_writes_a_record_the_demo_reads(tmp_path, demo):
    import subprocess
    import sys
    from pathlib import Path

    from sfpo.demo import record_context

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rec.json"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "demo_record.py"), "--seeds", "0", "--out",
                           str(out), "--work-dir", str(tmp_path / "runs"), *TINY], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["seeds"] == [0]
    ctx = record_context(out, demo[1])  # the fixture's demo ran with the same settings and seed
    assert ctx["status"] == "compared" and ctx["same_seed_matches"]
