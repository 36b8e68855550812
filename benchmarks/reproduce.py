"""Reproduction harness: does SFPO reach GRPO's best with fewer rollouts, and is it the reposition or just more
passes over the batch? Runs GRPO, GRPO with K+1 passes, SFPO (with and without the entropy switch), the paper's
ablations and a learning-rate sweep on the CPU testbed, over several seeds, each run in its own process.

    python benchmarks/reproduce.py --quick                    # ≤15 min on 2 cores: main methods, 1 seed, short
    python benchmarks/reproduce.py --grid main --seeds 0 1 2  # the published main table (hours)
    python benchmarks/reproduce.py --grid all --seeds 0 1 2   # + ablations, LR sweep, harder conditions

A finished run (its summary.json exists) is never recomputed; an interrupted one resumes from its checkpoint.
Writes <report>/results.json, <report>/../reproduction.md and PNG curves, and prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sfpo.compare import best_point, first_reach, match_ratios  # noqa: E402
from sfpo.metrics import read_metrics  # noqa: E402

logger = logging.getLogger("reproduce")

CONFIG = ROOT / "configs" / "reproduce.yaml"
SFPO = ["algorithm.name=sfpo", "algorithm.inner_steps=3", "algorithm.alpha=0.8"]
MAIN = {
    "grpo": ["algorithm.name=grpo"],
    "grpo_4passes": ["algorithm.name=grpo", "algorithm.passes=4"],
    "sfpo": SFPO + ["algorithm.switch=entropy"],
    "sfpo_noswitch": SFPO + ["algorithm.switch=never"],
}
ABLATIONS = {
    **{f"sfpo_a{a}": SFPO + [f"algorithm.alpha={a}", "algorithm.switch=never"] for a in (0.2, 0.5, 1.0)},
    **{f"sfpo_k{k}": SFPO + [f"algorithm.inner_steps={k}", "algorithm.switch=never"] for k in (1, 5, 7)},
    "sfpo_k7_a0.2": SFPO + ["algorithm.inner_steps=7", "algorithm.alpha=0.2", "algorithm.switch=never"],
    "sfpo_reset": SFPO + ["algorithm.optimizer_state=reset", "algorithm.switch=never"],
    "sfpo_restore": SFPO + ["algorithm.optimizer_state=restore", "algorithm.switch=never"],
    "sfpo_noslow": SFPO + ["algorithm.slow_pass=false", "algorithm.switch=never"],
}
LR_FACTORS = (0.3, 3.0)  # with the base LR: a 10× span
LR_METHODS = ("grpo", "grpo_4passes", "sfpo_noswitch")
HARD = {  # conditions where the paper's argument (noisy gradients early) should matter more
    "noise": ["task.reward_noise=0.2"],
    "countdown": ["task.name=countdown"],
}
QUICK = ["steps=30", "eval.every=5", "eval.num_prompts=64", "eval.test_num_prompts=64"]


def lr_run_name(method: str, lr: float, base_lr: float) -> str:
    """The run folder name of ``method`` at learning rate ``lr``: the method's own name at the base rate."""
    return method if lr == base_lr else f"{method}@lr{lr:.0e}"


def grid(name: str, base_lr: float) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    if name in ("main", "all", "quick"):
        runs.update(MAIN if name != "quick" else {k: MAIN[k] for k in ("grpo", "grpo_4passes", "sfpo")})
    if name in ("ablations", "all"):
        runs.update(ABLATIONS)
    if name in ("lr", "all"):
        for m in LR_METHODS:
            for f in LR_FACTORS:
                runs[lr_run_name(m, base_lr * f, base_lr)] = MAIN[m] + [f"optim.lr={base_lr * f}"]
    if name in ("hard", "all"):
        for cond, extra in HARD.items():
            for m in ("grpo", "grpo_4passes", "sfpo_noswitch"):
                runs[f"{cond}/{m}"] = MAIN[m] + extra
    if not runs:
        raise SystemExit(f"unknown grid {name!r}")
    return runs


def run_one(name: str, overrides: list[str], seed: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / name / f"seed{seed}"
    summary = run_dir / "summary.json"
    if summary.exists():
        logger.info("%-28s seed %d: done before, reusing %s", name, seed, run_dir)
        return json.loads(summary.read_text())
    cmd = [sys.executable, "-m", "sfpo.cli", "train", str(CONFIG), *overrides, *extra, f"seed={seed}",
           f"output_dir={run_dir}", "log.progress=false", "log.tensorboard=false", "checkpoint_every=10"]
    t0 = time.perf_counter()
    logger.info("%-28s seed %d: %s", name, seed, " ".join(cmd[3:]))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run {name} seed {seed} failed:\n{proc.stderr[-4000:]}")
    logger.info("%-28s seed %d: finished in %.0f s", name, seed, time.perf_counter() - t0)
    return json.loads(summary.read_text())


def _med(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _spread(xs: list) -> list | None:
    xs = [x for x in xs if x is not None]
    return [min(xs), max(xs)] if xs else None


def analyse(runs: dict[str, list[str]], seeds: list[int], out: Path) -> dict:
    """Per-run rows over the seeds that finished (a run missing some seeds reports the ones it has)."""
    done = {name: [s for s in seeds if (out / name / f"seed{s}" / "summary.json").exists()] for name in runs}
    runs = {name: ov for name, ov in runs.items() if done[name]}
    recs = {name: {s: read_metrics(out / name / f"seed{s}") for s in done[name]} for name in runs}
    sums = {name: {s: json.loads((out / name / f"seed{s}" / "summary.json").read_text()) for s in done[name]}
            for name in runs}
    table = {}
    for name in runs:
        seeds_here = done[name]
        prefix = name.split("/")[0] + "/" if "/" in name else ""
        base = prefix + "grpo" if prefix + "grpo" in recs else "grpo"
        passes = prefix + "grpo_4passes" if prefix + "grpo_4passes" in recs else "grpo_4passes"
        row: dict = {"seeds": seeds_here, "best_val": {}, "test_of_best": {}, "rollouts_to_grpo_best": {},
                     "time_to_grpo_best": {}, "vs_grpo": {}, "vs_grpo_passes": {}, "vs_grpo_smoothed": {},
                     "vs_grpo_passes_smoothed": {}, "step_s": {}, "phase_s": {},
                     "peak_rss_mb": {}, "switched_off_at": {}}
        for s in seeds_here:
            r, summ = recs[name][s], sums[name][s]
            row["best_val"][s] = best_point(r)["acc"]
            row["test_of_best"][s] = summ.get("test/best_accuracy")
            hit = first_reach(r, best_point(recs[base][s])["acc"]) if s in recs.get(base, {}) else None
            row["rollouts_to_grpo_best"][s] = hit["rollouts"] if hit else None
            row["time_to_grpo_best"][s] = hit["time"] if hit else None
            if s in recs.get(base, {}):
                row["vs_grpo"][s] = match_ratios(recs[base][s], r)
                row["vs_grpo_smoothed"][s] = match_ratios(recs[base][s], r, smooth=3)
            if s in recs.get(passes, {}):
                row["vs_grpo_passes"][s] = match_ratios(recs[passes][s], r)
                row["vs_grpo_passes_smoothed"][s] = match_ratios(recs[passes][s], r, smooth=3)
            steps = [x for x in r if x.get("time/step") is not None]
            row["step_s"][s] = _med([x["time/step"] for x in steps])
            active = [x for x in steps if x.get("sfpo/active") == 1.0] or steps  # SFPO phases: while it was on
            row["phase_s"][s] = {k: _med([x.get(k) for x in active]) for k in
                                 ("time/rollout", "time/reward", "time/old_logprobs", "time/fast",
                                  "time/reposition", "time/slow", "time/update")}
            row["peak_rss_mb"][s] = summ.get("peak_rss_mb")
            row["switched_off_at"][s] = summ.get("switched_off_at")
        table[name] = row
    return table


def ratio_block(table: dict, name: str, key: str, field: str) -> dict:
    per_seed = {s: v[field] for s, v in table[name][key].items()}
    return {"median": _med(list(per_seed.values())), "spread": _spread(list(per_seed.values())),
            "per_seed": per_seed, "reached": sum(v["reached"] for v in table[name][key].values())}


def fmt(v, f="{:.3f}"):
    return "—" if v is None else f.format(v)


def write_report(table: dict, runs: dict, seeds: list[int], report: Path, out: Path, meta: dict) -> dict:
    from sfpo.plots import plot_compare

    report.mkdir(parents=True, exist_ok=True)
    main_names = [n for n in ("grpo", "grpo_4passes", "sfpo", "sfpo_noswitch") if n in table]
    plots = {}
    groups = {"main": main_names, "ablations": [n for n in table if n.startswith("sfpo_") and n not in main_names],
              "lr": [n for n in table if "@lr" in n], "hard": [n for n in table if "/" in n]}
    for g, names in groups.items():
        if names:
            ref = _med(list(table["grpo"]["best_val"].values())) if g != "hard" and "grpo" in table else None
            if g == "ablations":
                names = ["grpo", "sfpo_noswitch"] + names if "sfpo_noswitch" in table else ["grpo"] + names
            path = plot_compare({n: [out / n / f"seed{s}" for s in table[n]["seeds"]] for n in names if n in table},
                                report / f"{g}.png",
                                reference=ref)
            plots[g] = path.name
    lines = [f"| run (seeds) | best val acc, median [min, max] | test acc of best | rollouts to GRPO's best | "
             f"wall-clock to GRPO's best (s) | rollouts ratio vs GRPO | wall-clock ratio vs GRPO | "
             f"rollouts ratio vs GRPO-{{K+1}} | wall-clock ratio vs GRPO-{{K+1}} | step (s) | fast / repos. / slow (s) "
             f"| peak RSS (MB) |", "|" + "---|" * 12]
    for name, row in table.items():
        bv = list(row["best_val"].values())
        def rb(key, field):
            if not row[key]:
                return "—"
            b = ratio_block(table, name, key, field)
            sp = b["spread"]
            return f"{fmt(b['median'], '{:.2f}')} [{fmt(sp[0], '{:.2f}') if sp else '—'}, " \
                   f"{fmt(sp[1], '{:.2f}') if sp else '—'}] ({b['reached']}/{len(row['seeds'])})"
        ph = {k: _med([p[k] for p in row["phase_s"].values()]) for k in ("time/fast", "time/reposition", "time/slow")}
        lines.append(
            f"| {name} ({len(row['seeds'])}) | {fmt(_med(bv))} [{fmt(min(bv))}, {fmt(max(bv))}] | {fmt(_med(list(row['test_of_best'].values())))} "
            f"| {fmt(_med(list(row['rollouts_to_grpo_best'].values())), '{:.0f}')} "
            f"({sum(v is not None for v in row['rollouts_to_grpo_best'].values())}/{len(row['seeds'])}) "
            f"| {fmt(_med(list(row['time_to_grpo_best'].values())), '{:.0f}')} "
            f"| {rb('vs_grpo', 'rollouts_ratio')} | {rb('vs_grpo', 'wallclock_ratio')} "
            f"| {rb('vs_grpo_passes', 'rollouts_ratio')} | {rb('vs_grpo_passes', 'wallclock_ratio')} "
            f"| {fmt(_med(list(row['step_s'].values())), '{:.2f}')} "
            f"| {fmt(ph['time/fast'], '{:.2f}')} / {fmt(ph['time/reposition'], '{:.4f}')} / {fmt(ph['time/slow'], '{:.2f}')} "
            f"| {fmt(_med(list(row['peak_rss_mb'].values())), '{:.0f}')} |")
    results = {"seeds": seeds, "meta": meta, "runs": {n: runs[n] for n in table}, "table": table, "plots": plots}
    if "sfpo" in table:
        for key, field, out_key in (("vs_grpo", "rollouts_ratio", "rollouts_ratio_vs_grpo"),
                                    ("vs_grpo_passes", "rollouts_ratio", "rollouts_ratio_vs_grpo_passes"),
                                    ("vs_grpo", "wallclock_ratio", "wallclock_ratio_vs_grpo"),
                                    ("vs_grpo_passes", "wallclock_ratio", "wallclock_ratio_vs_grpo_passes")):
            results[out_key] = ratio_block(table, "sfpo", key, field) if table["sfpo"][key] else None
            smooth_key = key + "_smoothed"
            results[out_key + "_smoothed"] = (ratio_block(table, "sfpo", smooth_key, field)
                                              if table["sfpo"][smooth_key] else None)
    (report / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (report / "table.md").write_text("\n".join(lines) + "\n")
    write_markdown(results, table, lines, report, meta)
    return results


def findings(results: dict, table: dict) -> list[str]:
    """Plain sentences computed from the numbers (what held, what did not)."""
    out = []
    n = len(results["seeds"])
    def acc(name):
        return _med(list(table[name]["best_val"].values())) if name in table else None
    for other in ("grpo", "grpo_4passes"):
        if "sfpo" in table and other in table:
            a, b = acc("sfpo"), acc(other)
            out.append(f"Best validation accuracy, median over {n} seeds: SFPO {a:.3f} vs {other} {b:.3f} "
                       f"({'higher' if a > b else 'not higher'}).")
    pairs = [(k, lab) for k, lab in (("rollouts_ratio_vs_grpo", "rollouts vs GRPO"),
                                     ("rollouts_ratio_vs_grpo_passes", "rollouts vs GRPO with K+1 passes"),
                                     ("wallclock_ratio_vs_grpo", "wall-clock vs GRPO"),
                                     ("wallclock_ratio_vs_grpo_passes", "wall-clock vs GRPO with K+1 passes"))]
    pairs += [(k + "_smoothed", lab + " (validation averaged over 3 evaluations)") for k, lab in pairs]
    for key, label in pairs:
        b = results.get(key)
        if not b:
            continue
        med = b["median"]
        verdict = ("not measurable (SFPO never reached the baseline's best)" if med is None else
                   f"{med:.2f}× ({'SFPO cheaper' if med > 1 else 'SFPO not cheaper'})")
        out.append(f"To reach the baseline's best, {label}: {verdict}; reached in {b['reached']}/{n} seeds; "
                   f"per seed {json.dumps({s: (None if v is None else round(v, 2)) for s, v in b['per_seed'].items()})}.")
    return out


def write_markdown(results: dict, table: dict, lines: list[str], report: Path, meta: dict) -> None:
    md = report.parent / f"{report.name}.md" if report.name != "report" else report / "report.md"
    rel = report.name
    notes = report.parent / f"{report.name}_notes.md"
    body = ["# Reproduction: SFPO vs GRPO vs GRPO with K+1 passes on the CPU testbed", "",
            "Generated by `benchmarks/reproduce.py`; the exact commands are in `benchmarks/reproduce.sh`.", "",
            f"Command: `{meta['command']}` — commit {meta['commit']}, Python {meta['python']}, {meta['cpus']} CPUs "
            f"({meta['machine']}), seeds {results['seeds']}, overrides {meta['overrides']}.", "",
            "Ratios are baseline cost ÷ SFPO cost to first reach the baseline's best validation accuracy (the paper's "
            "convention: above 1 means SFPO got there with fewer rollouts / less training wall-clock); medians over "
            "seeds with [min, max] and (seeds that reached it). The best checkpoint is selected on validation and its "
            "accuracy reported on the held-out test split.", "", "## Findings (computed)", ""]
    body += [f"- {f}" for f in findings(results, table)]
    if notes.exists():
        body += ["", notes.read_text().strip()]
    body += ["", "## Table", ""] + lines + ["", "## Curves", ""]
    body += [f"![{g}]({rel}/{png})" for g, png in results["plots"].items()]
    md.write_text("\n".join(body) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="main", choices=["quick", "main", "ablations", "lr", "hard", "all"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="grid=quick, 1 seed, 30 steps: ≤15 min on 2 cores")
    p.add_argument("--out", default=str(ROOT / "runs" / "reproduce"), help="run folders (resumable)")
    p.add_argument("--report", default=None, help="where results.json and PNGs go (default: <out>/report; "
                                                   "the published record is docs/reproduction)")
    p.add_argument("--analyse-only", action="store_true", help="only rebuild the report from finished runs")
    p.add_argument("--methods", nargs="+", default=None, help="run only these names of the grid (the report "
                                                              "still covers every finished run of the grid)")
    p.add_argument("overrides", nargs="*", help="config overrides for every run (e.g. steps=80)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.grid, args.seeds = "quick", args.seeds[:1]
        args.out = str(Path(args.out).with_name(Path(args.out).name + "_quick"))
    extra = (QUICK if args.quick else []) + args.overrides
    from sfpo.config import load_config

    base_lr = load_config(CONFIG, extra).optim.lr
    runs = grid(args.grid, base_lr)
    out = Path(args.out)
    t0 = time.perf_counter()
    total = len(runs) * len(args.seeds)
    done = 0
    if not args.analyse_only:
        for seed in args.seeds:  # seed-major: a partial grid already has every method for the first seeds
            for name, ov in runs.items():
                if args.methods and name not in args.methods:
                    continue
                run_one(name, ov, seed, out, extra)
                done += 1
                logger.info("progress: %d/%d runs, %.0f s elapsed", done, total, time.perf_counter() - t0)
    meta = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "grid": args.grid,
            "overrides": extra, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                               capture_output=True, text=True).stdout.strip(),
            "elapsed_s": time.perf_counter() - t0}
    report = Path(args.report) if args.report else out / "report"
    results = write_report(analyse(runs, args.seeds, out), runs, args.seeds, report, out, meta)
    print((report / "table.md").read_text())
    last = {k: (results.get(k) or {}).get("median") for k in
            ("rollouts_ratio_vs_grpo", "rollouts_ratio_vs_grpo_passes", "wallclock_ratio_vs_grpo",
             "wallclock_ratio_vs_grpo_passes")}
    print(json.dumps({"seeds": args.seeds, "grid": args.grid, **last, "report": str(report)}))


if __name__ == "__main__":
    main()
