"""Issue 24's analysis on hand-made run records (no training): the plateau criterion, the momentum choice, the
α sweep's comparison against GRPO-4 and the computed answer."""

import pytest

from sfpo.reproduce import beyond as reproduce_beyond
from sfpo.reproduce import grid as reproduce_grid
from test_reproduce_analysis import record


def _curve(accs, every=5):
    return [[i * every, i * every * 256, float(i), a] for i, a in enumerate(accs)]


def test_plateau_is_the_first_step_whose_smoothed_gain_over_the_window_is_small():
    # rises 0.02 per evaluation (every 5 steps) to step 100, then flat: with smoothing over 4 evaluations and a
    # 100-step window, the gain over the window first drops to ≤ 0.01 once the whole window is flat
    accs = [0.3 + 0.02 * min(i, 20) for i in range(61)]
    rec = {"val": _curve(accs)}
    step = reproduce_beyond.plateau_step(rec, window=100, min_gain=0.01, smooth=4)
    # smoothed at 110 is mean(0.68, 0.70, 0.70, 0.70) = 0.695, at 210 it is 0.70: gain 0.005 ≤ 0.01 → step 210;
    # at 205 the gain over smoothed(105) = mean(0.66, 0.68, 0.70, 0.70) = 0.685 is 0.015 > 0.01
    assert step == 210
    assert reproduce_beyond.plateau_step({"val": _curve([0.3 + 0.02 * i for i in range(61)])}) is None


def test_momentum_choice_waits_for_the_whole_sweep_and_takes_the_best():
    recs = [dict(record(f"sfpo_mom{mu}", 0, 0, 2000, 0.5 + 0.01 * k, lr=lr))
            for k, (mu, lr) in enumerate((mu, lr) for mu in reproduce_grid.MOMENTA for lr in reproduce_grid.MOMENTUM_LRS)]
    assert reproduce_grid.momentum_choice(recs[:-1]) is None
    assert reproduce_grid.momentum_choice(recs) == (reproduce_grid.MOMENTA[-1], reproduce_grid.MOMENTUM_LRS[-1])


def _alpha_grid(alpha_best: float):
    """The main grid's arithmetic sweep on the selection unit (so that best lrs exist) and held-out runs of GRPO-4
    and of α = 1.5 at lr 3e-5; α = 1.5's best validation is ``alpha_best`` on every unit, GRPO-4's 0.6."""
    lr = reproduce_grid.ALPHA_SWEEP_LR
    recs = [record(m, 0, 0, 2000, 0.5 + (0.01 if l == lr else 0.0), lr=l)
            for m in reproduce_grid.GRID_METHODS for l in reproduce_grid.LRS]
    for p in (0, 1, 2):
        for s in (1, 2, 3):
            wiggle = 0.002 * ((p + s) % 3)
            recs.append(record("grpo_4passes", p, s, 2000, 0.6 + wiggle, lr=lr))
            recs.append(record("grpo", p, s, 2000, 0.55 + wiggle, lr=lr))
            recs.append(record("sfpo_a1.5", p, s, 2000, alpha_best + wiggle, lr=lr))
    return recs


def test_the_alpha_sweep_is_compared_with_grpo_4_and_the_answer_says_so():
    worse = reproduce_beyond.analyse_beyond(_alpha_grid(0.58))
    row = worse["alpha"]["1.5"]
    assert row["n"] == 9 and row["vs_grpo_4passes"]["best_val_diff"]["verdict"] == "lower"
    assert "no α beats GRPO-4" in worse["answer"]
    better = reproduce_beyond.analyse_beyond(_alpha_grid(0.63))
    assert better["alpha"]["1.5"]["vs_grpo_4passes"]["best_val_diff"]["verdict"] == "higher"
    assert "α = 1.5 beat GRPO-4" in better["answer"]


def test_the_report_is_written_with_its_table_and_plot(tmp_path):
    res = reproduce_beyond.write_beyond_report(_alpha_grid(0.58), 18, 60, [], tmp_path, {})
    md = (tmp_path / "beyond_sfpo.md").read_text()
    assert "| 1.5 | `sfpo_a1.5` | 9 |" in md and res["partial"] is True
    assert (tmp_path / "beyond_alpha.png").stat().st_size > 1000


def test_the_committed_reports_regenerate_byte_for_byte(tmp_path):
    """`sfpo reproduce --analyse-only` rebuilds docs/reproduction.md, results.json and issue 24's report from the
    committed records, byte for byte: the reports are functions of the records alone (no machine, commit or
    folder in them), and a record committed without its report shows here."""
    import shutil

    from sfpo.reproduce.grid import CHECKOUT
    from sfpo.reproduce.harness import main

    docs = CHECKOUT / "docs"
    report = tmp_path / "reproduction"
    report.mkdir()
    shutil.copy(docs / "reproduction_notes.md", tmp_path)  # the hand-written notes the report links to
    shutil.copy(docs / "reproduction" / "record_2026-11-30.json", report)
    records = str(docs / "reproduction" / "records")
    for grid, files in (("issue12", ["reproduction.md", "reproduction/results.json"]),
                        ("issue24", ["reproduction/beyond_sfpo.md", "reproduction/results_beyond.json"])):
        assert main(["--grid", grid, "--analyse-only", "--records", records, "--report", str(report)]) == 0
        for f in files:
            assert (tmp_path / f).read_bytes() == (docs / f).read_bytes(), f"{f} differs from what its records give"


def test_issue24_plans_each_run_once():
    # with the committed records the momentum choice exists, so arithmetic's held-out GRPO-4 and SFPO runs are
    # planned both as α-sweep points and as momentum's baselines: 18 runs were planned twice and the report's
    # "n of N planned runs" counted them twice
    from sfpo.reproduce.grid import CHECKOUT

    recs = reproduce_grid.load_records(CHECKOUT / "docs" / "reproduction" / "records")
    runs, waiting = reproduce_grid.plan_issue24(recs)
    names = [reproduce_grid.name_of(r) for r in runs]
    assert not waiting and len(names) == len(set(names))
    assert names.count(reproduce_grid.name_of(reproduce_grid.spec("arithmetic", "grpo_4passes", 3e-5, 1, 1))) == 1
    assert len(runs) == 99  # α sweep 45, momentum sweep 6, momentum held-out 2 tasks × 27 less 18 shared, plateau 12


def _row(best_val: str, test: str) -> dict:
    return {"vs_grpo_4passes": {"best_val_diff": {"verdict": best_val}, "test_of_best_diff": {"verdict": test}}}


def test_the_answer_names_where_momentum_beats_the_control_and_what_the_plateau_runs_say():
    effect = {"point": -0.01, "ci": [-0.02, 0.005], "n": 3, "verdict": "within noise"}
    out = {"alpha": {}, "momentum_choice": {"mu": 0.5, "lr": 3e-5},
           "momentum": {"arithmetic": _row("higher", "within noise"), "countdown": _row("within noise", "lower")},
           "plateau": {"grpo": {"plateau_steps": {"p0s1": 310, "p0s2": None}, "vs": {}},
                       "grpo_4passes": {"plateau_steps": {"p0s1": 490, "p0s2": 500},
                                        "vs": {"grpo": {"best_val_diff": effect},
                                               "sfpo_noswitch": {"best_val_diff": effect}}}}}
    said = reproduce_beyond.answer(out)
    assert "beats GRPO-4 on arithmetic only" in said
    assert "GRPO met the plateau criterion in 1 of 2 long runs, GRPO-4 met the plateau criterion in 2 of 2" in said
    assert "had not flattened" not in said  # no run's end is known: nothing is said about it
    assert "sfpo_noswitch -0.010 [-0.020, +0.005] within noise (n=3)" in said and "grpo -0.010" not in said
    out["momentum"]["arithmetic"] = _row("within noise", "within noise")
    assert "beats GRPO-4 on neither task" in reproduce_beyond.answer(out)
    out["momentum"] = {t: _row("higher", "higher") for t in ("arithmetic", "countdown")}
    assert "beats GRPO-4 on both tasks" in reproduce_beyond.answer(out)


def _long(method: str, seed: int, accs: list[float]) -> dict:
    rec = dict(record(method, 0, seed, 2000, max(accs), lr=3e-5))
    rec.update(task="arith_long", val=_curve(accs), best_step=5 * accs.index(max(accs)), steps=5 * (len(accs) - 1))
    return rec


def test_the_plateau_report_says_whether_the_curves_still_rose_at_their_end(tmp_path):
    # GRPO pauses at steps 100-225 (the criterion fires), then rises 0.01 an evaluation to its end; GRPO-4 rises, then is flat
    # for its last 150 steps; so the criterion fires for both, but only GRPO was still rising at the end
    grpo = [0.3 + 0.01 * min(i, 20) + 0.01 * max(0, i - 45) for i in range(61)]
    four = [0.3 + 0.02 * min(i, 30) for i in range(61)]
    recs = _alpha_grid(0.58) + [_long(m, s, [a + 0.001 * s for a in accs]) for s in (1, 2)
                                for m, accs in (("grpo", grpo), ("grpo_4passes", four))]
    out = reproduce_beyond.analyse_beyond(recs)
    run = out["plateau_runs"]["grpo"]["p0s1"]
    assert run["plateau_step"] is not None and run["end_gain"] == pytest.approx(0.135, abs=1e-9)  # mean(0.62..0.65) - 0.5
    assert out["plateau_runs"]["grpo_4passes"]["p0s2"]["end_gain"] == pytest.approx(0.0, abs=1e-9)
    assert "GRPO met the plateau criterion in 2 of 2 long runs" in out["answer"]
    assert "2 of 4 long runs (GRPO 2 of 2, GRPO-4 0 of 2) still rose" in out["answer"]
    reproduce_beyond.write_beyond_report(recs, 4, 4, [], tmp_path, {})
    md = (tmp_path / "beyond_sfpo.md").read_text()
    assert "| `grpo` | 2 | " in md and "+0.135, +0.135 |" in md
    assert (tmp_path / "beyond_plateau.png").stat().st_size > 1000
