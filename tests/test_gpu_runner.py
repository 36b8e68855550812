"""benchmarks/gpu/run_all.py, the one command for a lent GPU, rehearsed on CPU: every part's JSON is written with
real content (CUDA parts say why they were skipped), a part past its deadline is killed with its workers and
recorded, the budget skips what cannot fit, and the equivalence and ZeRO verdicts fail when they should."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # run_all's dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def test_rehearsal_on_cpu_writes_every_part_in_under_two_minutes(tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(GPU / "run_all.py"), str(out), "--device", "cpu", "--tiny",
                           "--work", str(tmp_path / "work")], env=env(), capture_output=True, text=True, timeout=180)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert elapsed < 120, elapsed
    # six files, no folder: a lent machine's $OUT brings back at most 8 files
    assert sorted(p.name for p in out.iterdir()) == ["equivalence.json", "logs.txt", "native.json", "summary.json",
                                                     "verl.json", "zero.json"]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["parts"] == {"native": "ok", "equivalence": "ok", "zero": "skipped", "verl": "skipped"}

    native = json.loads((out / "native.json").read_text())
    variants = ["bf16", "bf16+ckpt", "bf16+ckpt+full-logits", "fp32"]
    assert [(r["variant"], r["algorithm"]) for r in native["runs"]] == [(v, a) for v in variants
                                                                         for a in ("grpo", "sfpo")]
    assert native["ok"] is True and native["part"]["exit_status"] == 0
    for r in native["runs"]:
        assert r["time/step"] > 0 and r["time/update"] > 0 and r["update_tflop"] > 0, r
    assert set(native["sfpo_over_grpo"]) == set(variants)

    eq = json.loads((out / "equivalence.json").read_text())
    assert eq["ok"] is True and eq["device"] == "cpu"
    have_trl = importlib.util.find_spec("trl") is not None
    for name in ("native", "trl") if have_trl else ("native",):
        checks = eq[name]["checks"]
        assert set(checks) == {"alpha0_vs_grpo", "alpha1_vs_grpo_3_passes"}
        assert all(c["verdict"] == "bit-identical" and c["max_abs_diff"] == 0.0 for c in checks.values())
        assert eq[name]["rerun_noise"] == 0.0 and eq[name]["control_alpha0.8_vs_grpo_passes"] > 1e-4
    if not have_trl:
        assert eq["trl"]["skipped"].startswith("trl not installed")

    assert json.loads((out / "zero.json").read_text()) == {"skipped": "no CUDA"}
    verl = json.loads((out / "verl.json").read_text())
    assert "Ray" in verl["skipped"] and len(verl["reasons"]) == 4
    assert any("64 MiB" in r for r in verl["reasons"]) and any("transformers" in r for r in verl["reasons"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["machine"]["torch"] and summary["machine"]["gpu"] is None and summary["total_s"] < 120
    logs = (out / "logs.txt").read_text()
    assert "===== native:" in logs and "===== equivalence:" in logs and "gpu_check:" in logs


def test_a_part_past_its_deadline_is_killed_with_its_workers_and_recorded(tmp_path):
    run_all = load("run_all")
    # the part starts a worker of its own (as zero.py starts DeepSpeed's) and both would sleep for a minute
    code = ("import subprocess, sys, time; w = subprocess.Popen(['sleep', '60']); print(w.pid, flush=True); "
            "time.sleep(60)")
    t0 = time.perf_counter()
    result = run_all.run_part("slow", [sys.executable, "-c", code], tmp_path / "slow.json", tmp_path / "work",
                              1.0, env())
    assert time.perf_counter() - t0 < 15
    assert result["error"].startswith("timeout: killed after 1 s") and result["part"]["exit_status"] is None
    worker = int((tmp_path / "work" / "log.txt").read_text().split()[0])
    for _ in range(50):  # gone, or a zombie waiting for init to reap it
        stat = Path(f"/proc/{worker}/stat")
        if not stat.exists() or stat.read_text().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the part's worker {worker} outlived the deadline")


def test_a_failing_part_is_recorded_with_its_last_lines(tmp_path):
    run_all = load("run_all")
    result = run_all.run_part("bad", [sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"],
                              tmp_path / "bad.json", tmp_path / "work", 30.0, env())
    assert result["error"] == "exit status 3: about to fail" and run_all.status(result) == "FAIL"


def test_a_budget_too_small_for_a_part_skips_it_and_says_so(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(GPU / "run_all.py"), str(out), "--device", "cpu", "--tiny",
                           "--parts", "equivalence,verl", "--budget-s", "5"], env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "equivalence.json").read_text())["skipped"].startswith("budget (")
    assert not (out / "native.json").exists()
    assert json.loads(proc.stdout.strip().splitlines()[-1])["parts"] == {"equivalence": "skipped",
                                                                          "verl": "skipped"}


@pytest.mark.parametrize("diff, noise, expected", [
    (0.0, 0.0, "bit-identical"),
    (1e-7, 0.0, "FAIL"),  # reruns are bit-identical, so any difference is real
    (5e-7, 1e-7, "within 10x rerun noise"),
    (2e-6, 1e-7, "FAIL"),
])
def test_equivalence_verdict(diff, noise, expected):
    assert load("equivalence").verdict(diff, noise) == expected


def worker_result(alpha_one=0.0, no_reposition=1e-2, formula=5e-8, module_vs_master=0.0):
    """What deepspeed_worker.py writes for the scenarios alpha_one, alpha_zero and reposition."""
    return {"alpha_one": {"diff": alpha_one}, "alpha_zero": {"diff": 0.0},
            "reposition": {"diff_manual": 0.0, "module_vs_master": [module_vs_master], "formula_rel_err": formula,
                           "diff_no_reposition": no_reposition, "repositions": 1, "zero": "Z",
                           "anchor_numel": 10, "param_numel": 10}}


@pytest.mark.parametrize("kwargs, verdict", [
    ({}, "PASS (bit-identical)"),
    ({"alpha_one": 3e-6}, "PASS (max diff 3.0e-06)"),
    ({"alpha_one": 2e-4}, "FAIL"),  # a real difference
    ({"no_reposition": 1e-5}, "FAIL"),  # the control did not move: the check could not see a missing reposition
    ({"formula": 1e-5}, "FAIL"),  # the masters are not θ0 + α(θK − θ0)
    ({"module_vs_master": 1e-2}, "FAIL"),  # the module weights were not refreshed from the masters
])
def test_zero_verdict(kwargs, verdict):
    assert load("zero").judge(worker_result(**kwargs))["verdict"] == verdict


@pytest.mark.parametrize("diffs, verdict", [({"3": 0.0, "11": 0.0}, "PASS (bit-identical)"),
                                            ({"3": 0.0, "11": 2e-4}, "FAIL")])
def test_zero_resume_verdict(diffs, verdict):
    judged = load("zero").judge({"resume": {"diffs": diffs, "files": []}})
    assert judged["verdict"] == verdict and set(judged["diffs"]) == {"resume_at_3", "resume_at_11"}


def test_zero_part_runs_its_worker_end_to_end_on_deepspeeds_cpu_accelerator(tmp_path):
    pytest.importorskip("deepspeed")
    pytest.importorskip("trl")
    out = tmp_path / "zero.json"
    proc = subprocess.run([sys.executable, str(GPU / "zero.py"), str(out), "--cpu", "--checks", "zero2",
                           "--budget-s", "150", "--work", str(tmp_path / "work")], env=env(), capture_output=True,
                          text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = json.loads(out.read_text())["checks"]["zero2"]
    assert stage["verdict"] == "PASS (bit-identical)", stage
    assert stage["repositions"] == 1 and stage["anchor_numel"] == stage["param_numel"] > 0


def test_on_cuda_each_part_gets_its_share_and_unused_time_passes_on(tmp_path, monkeypatch):
    """The CUDA branch without a GPU: parts are started with the commands and deadlines a GPU run would get."""
    import torch

    run_all = load("run_all")
    calls = []

    def fake_run_part(name, argv, out_json, work, timeout_s, env):
        calls.append((name, round(timeout_s), argv))
        work.mkdir(parents=True)
        (work / "log.txt").write_text("fake\n")
        body = {"native": {"runs": [], "sfpo_over_grpo": {}}, "equivalence": {}, "zero": {"checks": {}}}[name]
        return {**body, "ok": True, "part": {"seconds": 0.0, "exit_status": 0, "command": argv[1:]}}

    monkeypatch.setattr(run_all, "run_part", fake_run_part)
    monkeypatch.setattr(run_all, "machine", lambda: {"gpu": "fake", "torch": torch.__version__, "transformers": "-",
                                                     "trl": None, "deepspeed": None, "date": "-"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    summary = run_all.main([str(tmp_path / "out"), "--budget-s", "480", "--work", str(tmp_path / "work")])
    # native may use half the budget; nothing was used, so equivalence may use all but zero's 30%, zero the rest
    assert [(name, seconds) for name, seconds, _ in calls] == [("native", 240), ("equivalence", 336), ("zero", 480)]
    native, equivalence, zero = (argv for _, _, argv in calls)
    variants = native[native.index("--variants") + 1].split(",")
    assert variants[0] == "bf16" and variants[-1] == "fp32" and "--tiny" not in native and "--prompts" in native
    assert equivalence[equivalence.index("--device") + 1] == "cuda" and "--tiny" not in equivalence
    assert zero[zero.index("--budget-s") + 1] == "470"
    assert {k: v["status"] for k, v in summary["parts"].items()} == {"native": "ok", "equivalence": "ok",
                                                                     "zero": "ok", "verl": "skipped"}


def test_equivalence_without_trl_checks_the_native_trainer_and_says_why_not_trl(tmp_path):
    """A GPU machine without the carried wheels: the native half still runs, TRL's is skipped with the reason."""
    from test_gpu_check import RUNNER  # runs a script with the named packages made unimportable

    out = tmp_path / "equivalence.json"
    proc = subprocess.run([sys.executable, "-c", RUNNER, "trl,deepspeed,datasets", str(GPU / "equivalence.py"),
                           str(out), "--device", "cpu", "--tiny"], env=env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"] is True and result["trl"]["skipped"].startswith("trl not installed")
    assert {c["verdict"] for c in result["native"]["checks"].values()} == {"bit-identical"}


def test_a_native_part_cut_short_keeps_the_runs_it_finished(tmp_path):
    """gpu_check.py writes its JSON after every run; the deadline keeps those and says it struck."""
    run_all = load("run_all")
    work = tmp_path / "work"
    code = (f"import json, pathlib, time; pathlib.Path({str(work)!r}, 'gpu_check.json').write_text("
            "json.dumps({'partial': True, 'runs': [{'variant': 'bf16', 'algorithm': 'grpo', 'time/step': 1.0}]})); "
            "time.sleep(60)")
    result = run_all.run_part("native", [sys.executable, "-c", code], tmp_path / "native.json", work, 3.0, env())
    assert result["partial"] is True and result["runs"][0]["time/step"] == 1.0
    assert result["error"].startswith("timeout") and run_all.status(result) == "FAIL"
    assert run_all.headline("native", result).startswith("ERROR timeout")
