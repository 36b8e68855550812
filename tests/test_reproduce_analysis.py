"""The reproduction harness's statistics on hand-made run records (no training): the paired two-level bootstrap,
the "within noise" verdicts, the best-lr choice, the grid plan and the report's results.json keys."""

import json
import os
import shutil

import pytest

from sfpo.compare import bootstrap_ci, effect_summary, ratio_median

from sfpo.reproduce import grid as reproduce_grid
from sfpo.reproduce import harness as reproduce
from sfpo.reproduce import report as reproduce_report


def record(method, policy, seed, reach_at, best, *, task="arithmetic", lr=1e-4, test=None, shared=False):
    """A run whose validation accuracy climbs linearly from 0.3 to ``best`` at rollout ``reach_at`` (then stays)."""
    val = []
    for step in range(0, 11):
        rollouts = step * 256
        acc = 0.3 + (best - 0.3) * min(1.0, rollouts / reach_at)
        val.append([step, rollouts, step * (2.0 if method == "grpo_4passes" else 1.0), acc])
    return {"task": task, "method": method, "lr": lr, "policy": policy, "seed": seed, "overrides": [], "val": val,
            "best_val": best, "test_of_best": best if test is None else test, "step_s": 1.0, "alpha": None,
            "kl_fast": None, "cpu_per_wall": 0.5 if shared else 0.97, "cores_shared": shared,
            "phase_s": {"time/rollout": 0.1, "time/old_logprobs": 0.05, "time/update": 0.5},
            "policy_info": {"folder": f"{task}-p{policy}", "shipped": policy == 0, "sha256": "ab" * 32,
                            "steps_trained": 650, "probe_pass1": 0.3}}


def test_ratio_median_ranks_never_below_every_ratio():
    assert ratio_median([2.0, 1.0, 3.0]) == 2.0
    assert ratio_median([2.0, None, 3.0]) == 2.0  # one failure of three: the middle run still reached it
    assert ratio_median([None, None, 3.0]) is None  # most runs never reached: so is the median
    assert ratio_median([None, 1.0, 3.0, 5.0]) == 2.0 and ratio_median([]) is None


def test_bootstrap_is_deterministic_and_degenerate_on_constant_units():
    units = {0: {0: 1.5, 1: 1.5}, 1: {0: 1.5}}
    assert bootstrap_ci(units, ratio_median) == (1.5, 1.5)
    noisy = {p: {s: 1.0 + 0.1 * ((p * 3 + s) % 5 - 2) for s in range(3)} for p in range(3)}
    assert bootstrap_ci(noisy, ratio_median, seed=7) == bootstrap_ci(noisy, ratio_median, seed=7)
    lo, hi = bootstrap_ci(noisy, ratio_median)
    assert 0.8 <= lo < 1.0 < hi <= 1.2  # inside the data's range, and around its centre


def test_two_level_bootstrap_is_wider_when_policies_disagree():
    # same 9 values, arranged so that the spread is between policies (left) or within each policy (right)
    between = {0: {0: 0.9, 1: 0.9, 2: 0.9}, 1: {0: 1.0, 1: 1.0, 2: 1.0}, 2: {0: 1.1, 1: 1.1, 2: 1.1}}
    within = {p: {0: 0.9, 1: 1.0, 2: 1.1} for p in range(3)}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lo_b, hi_b = bootstrap_ci(between, mean)
    lo_w, hi_w = bootstrap_ci(within, mean)
    assert hi_b - lo_b > hi_w - lo_w


def test_verdicts():
    clear = {p: {s: 2.0 + 0.01 * s for s in range(3)} for p in range(3)}
    assert effect_summary(clear, kind="ratio")["verdict"] == "higher"
    worse = {p: {s: 0.5 for s in range(3)} for p in range(3)}
    assert effect_summary(worse, kind="ratio")["verdict"] == "lower"
    never = {p: {s: None for s in range(3)} for p in range(3)}
    e = effect_summary(never, kind="ratio")
    assert e["point"] is None and e["ci"] == [None, None] and e["verdict"] == "lower"
    mixed = {0: {0: 1.4, 1: 0.7, 2: 1.1}, 1: {0: 0.8, 1: 1.3, 2: 0.9}, 2: {0: 1.2, 1: 0.75, 2: 1.05}}
    assert effect_summary(mixed, kind="ratio")["verdict"] == "within noise"
    diffs = {0: {0: 0.03, 1: -0.02}, 1: {0: 0.01, 1: -0.03}}
    d = effect_summary(diffs, kind="difference")
    assert d["verdict"] == "within noise" and d["point"] == pytest.approx(-0.0025)
    assert effect_summary({0: {0: 0.05, 1: 0.04}, 1: {0: 0.06}}, kind="difference")["verdict"] == "higher"
    with pytest.raises(ValueError, match="kind must be"):
        effect_summary(clear, kind="mean")


def test_compare_pairs_runs_by_policy_and_seed():
    grpo = {p: {s: record("grpo", p, s, 2000, 0.5) for s in range(2)} for p in range(2)}
    sfpo = {p: {s: record("sfpo_noswitch", p, s, 1000, 0.55) for s in range(2)} for p in range(2)}
    sfpo[1][2] = record("sfpo_noswitch", 1, 2, 1000, 0.55)  # no GRPO partner: not a unit
    c = reproduce_report.compare(grpo, sfpo)
    r = c["rollouts_ratio"]
    # GRPO first reaches its best at 2048 rollouts (the val point after 2000); SFPO passes 0.5 at 800, seen at 1024
    assert r["n"] == 4 and r["reached"] == 4 and r["point"] == pytest.approx(2.0)
    assert r["ci"] == [pytest.approx(2.0)] * 2 and r["verdict"] == "higher"
    assert c["best_val_diff"]["point"] == pytest.approx(0.05) and c["best_val_diff"]["verdict"] == "higher"
    assert c["wallclock_reliable"]
    sfpo[0][0]["cores_shared"] = True
    assert not reproduce_report.compare(grpo, sfpo)["wallclock_reliable"]



def test_a_wallclock_pair_timed_on_two_cpus_is_left_out_and_counted():
    # a grid continued on another machine: GRPO's seed-1 run was timed on another CPU model than SFPO's
    grpo = {0: {s: record("grpo", 0, s, 2000, 0.5) for s in range(3)}}
    sfpo = {0: {s: record("sfpo_noswitch", 0, s, 1000, 0.55) for s in range(3)}}
    for cell in (grpo, sfpo):
        for rec in cell[0].values():
            rec["env"] = {"cpu": "AMD EPYC"}
    grpo[0][1]["env"] = {"cpu": "Intel(R) Xeon(R) Processor"}
    c = reproduce_report.compare(grpo, sfpo)
    w, r = c["wallclock_ratio"], c["rollouts_ratio"]
    assert w["n"] == 2 and w["other_cpu"] == 1 and set(w["per_run"]) == {"p0s0", "p0s2"}
    assert r["n"] == 3 and "other_cpu" not in r  # rollout counts do not depend on the machine
    assert "1 left out, timed on another CPU" in reproduce_report._effect(w)
    only = reproduce_report.compare({0: {1: grpo[0][1]}}, {0: {1: sfpo[0][1]}})["wallclock_ratio"]
    assert only["n"] == 0 and reproduce_report._effect(only) == "no pair timed on one CPU (1 left out)"


def test_a_baseline_that_never_improved_leaves_nothing_to_reach():
    # GRPO collapsed in one pair (best = its starting point): that pair has no ratio, and is left out, not "never"
    grpo = {0: {0: record("grpo", 0, 0, 2000, 0.3), 1: record("grpo", 0, 1, 2000, 0.5)}}
    sfpo = {0: {s: record("sfpo_noswitch", 0, s, 1000, 0.55) for s in (0, 1)}}
    r = reproduce_report.compare(grpo, sfpo)["rollouts_ratio"]
    assert r["nothing_to_reach"] == 1 and r["n"] == 1 and r["per_run"] == {"p0s1": pytest.approx(2.0)}
    flat = reproduce_report.compare({0: {0: grpo[0][0]}}, {0: {0: sfpo[0][0]}})
    for kind in ("rollouts_ratio", "wallclock_ratio"):
        assert flat[kind]["n"] == 0 and flat[kind]["nothing_to_reach"] == 1
        assert reproduce_report._effect(flat[kind]).startswith("nothing to reach")
    assert flat["best_val_diff"]["point"] == pytest.approx(0.25)  # the accuracy difference still counts

def full_sweep(task, best_lr, seeds=(0,)):
    """Policy-0 sweep records where every method is best at ``best_lr[method]``."""
    recs = []
    for m in reproduce_grid.GRID_METHODS:
        for lr in reproduce_grid.LRS:
            for s in seeds:
                recs.append(record(m, 0, s, 2000, 0.6 if lr == best_lr[m] else 0.4, task=task, lr=lr))
    return recs


def test_plan_waits_for_the_sweep_then_runs_each_method_at_its_best_lr():
    n, nl = len(reproduce_grid.GRID_METHODS), len(reproduce_grid.LRS)
    runs, waiting = reproduce_grid.plan("issue12", [0, 1, 2], [])
    # both sweeps on the selection unit (policy 0, seed 0), then their second seed; the rest waits for them
    assert len(runs) == 2 * n * nl * 2 and len(waiting) == 4
    assert [r["task"] for r in runs[: 2 * n * nl]] == ["arithmetic"] * n * nl + ["countdown"] * n * nl
    assert all((r["policy"], r["seed"]) == reproduce_grid.SELECT for r in runs[: 2 * n * nl])
    best = {"grpo": 3e-5, "grpo_4passes": 1e-5, "sfpo_noswitch": 1e-4, "sfpo_tr": 1e-4}
    recs = full_sweep("arithmetic", best)
    assert reproduce_grid.best_lrs(recs, "arithmetic") == best and reproduce_grid.best_lrs(recs, "countdown") is None
    # the second sweep seed does not move the choice: it was made on the selection unit alone
    other = {m: 3e-4 for m in best}
    assert reproduce_grid.best_lrs(recs + full_sweep("arithmetic", other, seeds=(1,)), "arithmetic") == best
    runs, waiting = reproduce_grid.plan("issue12", [0, 1, 2], recs)
    names = [reproduce_grid.record_name(r["task"], r["method"], r["lr"], r["policy"], r["seed"]) for r in runs]
    assert len(names) == len(set(names))
    main = [r for r in runs if r["task"] == "arithmetic" and (r["policy"], r["seed"]) != reproduce_grid.SELECT]
    assert len(main) == n * 9 + n * (nl - 1)  # 3 policies × 3 held-out seeds, then the 2nd sweep seed's others
    assert all(r["lr"] == best[r["method"]] for r in main[: n * 9])
    assert {(r["policy"], r["seed"]) for r in main[: n * 9]} == {(p, s) for p in (0, 1, 2) for s in (1, 2, 3)}
    assert [(r["policy"], r["seed"]) for r in main[: 3 * n : n]] == [(0, 1), (1, 1), (2, 1)]  # seed-major
    # arithmetic's comparison comes before the countdown sweep, which a partial grid then has not started
    first_countdown = next(i for i, r in enumerate(runs) if r["task"] == "countdown")
    assert first_countdown == n * nl + n * 9
    assert {r["task"] for r in runs} >= {"multiplication", "gen_heavy"} and len(waiting) == 1


def test_comparison_at_the_best_lr_leaves_out_the_unit_that_chose_it():
    best = {"grpo": 1e-4, "grpo_4passes": 1e-4, "sfpo_noswitch": 1e-4, "sfpo_tr": 1e-4}
    recs = full_sweep("arithmetic", best)  # the selection unit: SFPO no better than GRPO there
    for p in (0, 1, 2):
        for s in (1, 2, 3):
            recs += [record("grpo", p, s, 2000, 0.5), record("sfpo_noswitch", p, s, 1000, 0.55)]
    row = reproduce_report.analyse(recs)["main"]["arithmetic"]["sfpo_noswitch"]
    assert row["n"] == 9
    units = row["vs_grpo"]["rollouts_ratio"]["per_run"]
    assert "p0s0" not in units and len(units) == 9
    assert row["vs_grpo"]["best_val_diff"]["point"] == pytest.approx(0.05)  # the selection unit's 0 left out


def test_run_grid_runs_side_by_side_and_survives_a_failed_run(tmp_path, monkeypatch):
    import threading
    import time

    started, lock, peak = [], threading.Lock(), [0]
    inflight = [0]

    def fake_run_one(sp, out, records, extra, threads, env, parallel=1):
        name = reproduce_grid.name_of(sp)
        with lock:
            started.append(name)
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.05)
        with lock:
            inflight[0] -= 1
        if sp["method"] == "grpo_4passes":
            raise RuntimeError("boom")
        records.mkdir(parents=True, exist_ok=True)
        (records / name).write_text(json.dumps(record(sp["method"], sp["policy"], sp["seed"], 1000, 0.5)))

    monkeypatch.setattr(reproduce, "run_one", fake_run_one)
    args = type("A", (), {"grid": "quick", "seeds": [0], "workers": 2, "max_runs": 0, "threads": 1})()
    failed = reproduce.run_grid(args, tmp_path / "out", tmp_path / "rec", [], {})
    assert failed == ["arithmetic__grpo_4passes__lr1e-04__p0s0.json"]
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["arithmetic__grpo__lr1e-04__p0s0.json",
                                                                  "arithmetic__sfpo__lr1e-04__p0s0.json"]
    assert len(started) == 3 and peak[0] == 2  # each run once, two at a time
    assert not list((tmp_path / "out").glob("*.claim"))  # claims released


def test_claims_keep_two_harness_processes_off_the_same_run(tmp_path):
    assert reproduce._claim(tmp_path, "a.json")
    assert not reproduce._claim(tmp_path, "a.json")  # held by a live process (this one)
    (tmp_path / "b.json.claim").write_text("999999999")  # a process that no longer exists
    assert reproduce._claim(tmp_path, "b.json") and (tmp_path / "b.json.claim").read_text() == str(os.getpid())


def test_report_keeps_the_historic_keys_and_adds_intervals(tmp_path):
    recs = [record(m, 0, s, 2000 if m == "grpo" else 1600, 0.5 + 0.01 * s, lr=lr, shared=(s == 1))
            for m in reproduce_grid.GRID_METHODS for lr in reproduce_grid.LRS for s in (0, 1)]
    res = reproduce_report.write_report(recs, 300, ["later"], tmp_path / "reproduction", {"command": "test"})
    saved = json.loads((tmp_path / "reproduction" / "results.json").read_text())
    assert saved["partial"] and saved["policies"]["arithmetic"]["0"]["sha256"] == "ab" * 32
    assert saved["seeds"] == [0, 1]
    for key in ("rollouts_ratio_vs_grpo", "rollouts_ratio_vs_grpo_passes", "wallclock_ratio_vs_grpo",
                "wallclock_ratio_vs_grpo_passes"):
        block = saved[key]
        assert set(block) >= {"median", "per_seed", "ci"} and len(block["ci"]) == 2
    assert saved["rollouts_ratio_vs_grpo"]["median"] == pytest.approx(2048 / 1792)
    assert saved["wallclock_ratio_vs_grpo"]["reliable"] is False  # seed 1's runs shared their cores
    md = (tmp_path / "reproduction.md").read_text()
    assert "**Partial:**" in md and "unreliable" in md and "95% CI" in md
    for png in ("lr_sweep.png", "arithmetic_best_lr.png"):  # the plots the report links to
        assert (tmp_path / "reproduction" / png).stat().st_size > 10_000 and f"reproduction/{png}" in md
    assert res["best_lr"]["arithmetic"]["grpo"] == 1e-5  # all lrs tie: the smallest wins
    assert saved["mixed_policies"] == [] and "Mixed starting policies" not in md
    recs[0]["policy_info"] = {**recs[0]["policy_info"], "sha256": "cd" * 32}  # one run from another build
    res = reproduce_report.write_report(recs, 300, [], tmp_path / "reproduction", {"command": "test"})
    assert res["mixed_policies"] == ["arithmetic-p0"]
    assert "Mixed starting policies" in (tmp_path / "reproduction.md").read_text()


def test_an_unswept_task_is_compared_at_arithmetics_lrs_and_said_so(tmp_path):
    best = {"grpo": 1e-4, "grpo_4passes": 3e-5, "sfpo_noswitch": 3e-5, "sfpo_tr": 3e-5}
    recs = full_sweep("arithmetic", best)
    recs += [record(m, 0, s, 2000 if m == "grpo" else 1000, 0.5 if m == "grpo" else 0.55, task="multiplication",
                    lr=best[m]) for m in reproduce_grid.GRID_METHODS for s in (1, 2, 3)]
    res = reproduce_report.write_report(recs, 0, [], tmp_path / "reproduction", {"command": "test"})
    assert res["best_lr"]["multiplication"] == best  # the lrs chosen on arithmetic's sweep
    assert res["main"]["multiplication"]["sfpo_noswitch"]["vs_grpo"]["rollouts_ratio"]["n"] == 3
    md = (tmp_path / "reproduction.md").read_text()
    assert "## multiplication: each method at arithmetic's best learning rate (multiplication was not swept)" in md
    assert "## arithmetic: each method at its best learning rate" not in md  # arithmetic has no comparison runs
    assert "## arithmetic: learning-rate sweep" in md
    assert "## multiplication: learning-rate sweep" not in md  # one lr per method: not a sweep
    assert "| multiplication (arithmetic's lrs) | SFPO (3e-05) | GRPO | 3 |" in md


def test_fewer_than_three_runs_get_no_verdict():
    one = effect_summary({0: {0: 2.0}}, kind="ratio")
    assert one["ci"] is None and one["verdict"] == "too few runs" and one["point"] == 2.0
    two = effect_summary({0: {0: 2.0, 1: 2.2}}, kind="ratio")
    assert two["ci"] == [2.0, 2.2] and two["verdict"] == "too few runs"  # two agreeing seeds are no evidence
    assert effect_summary({0: {0: 2.0, 1: 2.2, 2: 2.1}}, kind="ratio")["verdict"] == "higher"
    assert effect_summary({}, kind="difference")["verdict"] == "not measurable"


def test_sweep_rows_hold_only_the_sweep_runs():
    best = {"grpo": 1e-4, "grpo_4passes": 1e-4, "sfpo_noswitch": 3e-5, "sfpo_tr": 3e-5}
    recs = full_sweep("arithmetic", best, seeds=(0, 1))
    recs += [record(m, p, s, 2000, 0.5, lr=best[m]) for m in reproduce_grid.GRID_METHODS for p in (0, 1, 2)
             for s in (2, 3)]
    sweep = reproduce_report.analyse(recs)["sweep"]["arithmetic"]
    assert sweep["grpo@1e-04"]["n"] == 2 and sweep["sfpo_noswitch@3e-05"]["n"] == 2
    assert sweep["sfpo_noswitch@1e-04"]["vs_grpo"]["rollouts_ratio"]["n"] == 2
    main = reproduce_report.analyse(recs)["main"]["arithmetic"]
    assert main["grpo"]["n"] == 1 + 6  # seed 1 of the sweep and the 6 comparison runs; seed 0 chose the lr


def test_the_sweeps_second_seed_says_whether_the_choice_of_lr_held():
    best = {"grpo": 1e-4, "grpo_4passes": 3e-5, "sfpo_noswitch": 3e-5, "sfpo_tr": 3e-4}
    recs = full_sweep("arithmetic", best)
    second = full_sweep("arithmetic", {**best, "grpo": 3e-5}, seeds=(1,))  # seed 1 would pick GRPO's lr apart
    assert reproduce_grid.sweep_stability(recs + second[:-1], "arithmetic") is None  # seed 1 not finished
    stability = reproduce_grid.sweep_stability(recs + second, "arithmetic")
    assert stability["grpo"]["chosen"] == 1e-4 and stability["grpo"]["per_seed"] == {0: 1e-4, 1: 3e-5}
    assert stability["grpo"]["by_mean"] == 3e-5  # a tie (0.5 at both) goes to the smaller lr
    assert all(stability[m]["per_seed"] == {0: best[m], 1: best[m]} for m in ("grpo_4passes", "sfpo_tr"))
    results = reproduce_report.analyse(recs + second)
    assert set(results["sweep_stability"]) == {"arithmetic"}
    line = next(f for f in reproduce_report.findings({"headline_source": "-", **results}) if "sweep, repeated" in f)
    assert "for 3 of 4 methods" in line and "GRPO 1e-04 on seed 0, 3e-05 on seed 1" in line
    assert reproduce_report.best_lrs(recs + second, "arithmetic") == best  # the choice stays the selection unit's


def test_a_stop_file_lets_runs_in_flight_finish_and_starts_no_new_one(tmp_path, monkeypatch):
    started = []

    def fake_run_one(sp, out, records, extra, threads, env, parallel=1):
        started.append(reproduce_grid.name_of(sp))
        (out / "STOP").touch()  # asked to stop while this run was in flight
        records.mkdir(parents=True, exist_ok=True)
        (records / reproduce_grid.name_of(sp)).write_text("{}")

    monkeypatch.setattr(reproduce, "run_one", fake_run_one)
    args = type("A", (), {"grid": "quick", "seeds": [0], "workers": 1, "max_runs": 0, "threads": 1})()
    assert reproduce.run_grid(args, tmp_path / "out", tmp_path / "rec", [], {}) == []
    assert started == ["arithmetic__grpo__lr1e-04__p0s0.json"]  # it finished; the other two never started
    assert [p.name for p in (tmp_path / "rec").iterdir()] == started


def test_a_resumed_run_is_marked(tmp_path):
    assert reproduce._last_checkpoint(tmp_path) is None
    for step in (10, 20, 30):
        (tmp_path / "checkpoints" / f"step_{step:06d}").mkdir(parents=True)
        if step < 30:  # step 30 was cut short: its trainer_state.pt, renamed into place last, is missing
            (tmp_path / "checkpoints" / f"step_{step:06d}" / "trainer_state.pt").touch()
    assert reproduce._last_checkpoint(tmp_path) == 20


def test_a_grid_policy_is_stored_beside_the_records_and_restored_over_a_local_build(tmp_path, monkeypatch):
    import sfpo.testbed

    monkeypatch.setenv("SFPO_CACHE_DIR", str(tmp_path / "cache"))
    builds = iter([b"this machine's build", b"another machine's build"])

    def fake_warm_start(task_name, task_kwargs, *, seed, size, progress):  # builds only when the cache lacks it
        path = sfpo.testbed.default_cache_dir() / f"{task_name}-{size}-p{seed}"
        if not (path / "model.safetensors").exists():
            path.mkdir(parents=True)
            (path / "model.safetensors").write_bytes(next(builds))
            (path / "sfpo_testbed.json").write_text(json.dumps({"steps_trained": 600, "probe_pass1": 0.4}))
        return path

    monkeypatch.setattr(sfpo.testbed, "warm_start", fake_warm_start)
    records = tmp_path / "reproduction" / "records"
    first = reproduce._policy("arithmetic", 1, records)
    stored = tmp_path / "reproduction" / "policies" / first["folder"] / "model.safetensors"
    assert stored.read_bytes() == b"this machine's build" and not first["shipped"]
    # a fresh machine: its cache is empty, so the stored build is restored, not rebuilt
    shutil.rmtree(tmp_path / "cache")
    assert reproduce._policy("arithmetic", 1, records)["sha256"] == first["sha256"]
    # a machine that built its own first: the stored build (the records' one) replaces it
    local = tmp_path / "cache" / "testbed" / first["folder"] / "model.safetensors"
    local.write_bytes(b"another machine's build")
    assert reproduce._policy("arithmetic", 1, records)["sha256"] == first["sha256"]
    assert local.read_bytes() == b"this machine's build"
    # records made from another build of this policy: a run from this one could not be paired with them
    records.mkdir(parents=True)
    (records / "r.json").write_text(json.dumps({"policy_info": {**first, "sha256": "cd" * 32}}))
    with pytest.raises(RuntimeError, match="not the build that earlier records of it were made from"):
        reproduce._policy("arithmetic", 1, records)


def test_the_stored_grid_policies_are_the_builds_the_records_were_made_from():
    from sfpo.testbed import file_sha256

    store = reproduce_grid.RECORDS.parent / "policies"
    stored = {p.parent.name: file_sha256(p) for p in store.glob("*/model.safetensors")}
    recs = reproduce_grid.load_records(reproduce_grid.RECORDS)
    assert stored, "the grid's non-shipped policies are stored beside its records"
    for r in recs:
        info = r["policy_info"]
        assert info["shipped"] or stored.get(info["folder"]) == info["sha256"], r["policy_info"]


def test_sfpo_reproduce_is_the_harness(capsys):
    """`sfpo reproduce ...` hands its arguments to the harness's own parser (the package's command, not a script)."""
    from sfpo.cli import main

    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sfpo reproduce") and "--analyse-only" in out and "issue24" in out
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--grid", "nonesuch"])
    assert e.value.code == 2
