"""The reproduction report: paired comparisons of the grid's run records (two-level bootstrap intervals over
policies × seeds, via sfpo.compare), the computed findings, docs/reproduction.md + results.json and the PNGs
beside them. Built from the records alone: `sfpo reproduce --analyse-only`."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from sfpo.compare import effect_summary, match_ratios
from sfpo.reproduce.grid import (GRID_METHODS, KL_BUDGET, LRS, SELECT, SHARED_BELOW, SWEPT, best_lrs, held_out, index,
                                 lrs_of, sweep_stability)

LABELS = {"grpo": "GRPO", "grpo_4passes": "GRPO-4 (K+1 passes)", "sfpo": "SFPO (entropy switch)",
          "sfpo_noswitch": "SFPO", "sfpo_tr": f"trust-region SFPO (KL ≤ {KL_BUDGET})"}
HEADLINE = "sfpo_noswitch"  # the SFPO of results.json's headline keys: the algorithm itself, no switch
RATIO_KEYS = (("rollouts", "vs_grpo", "rollouts_ratio_vs_grpo"),
              ("rollouts", "vs_grpo_passes", "rollouts_ratio_vs_grpo_passes"),
              ("wallclock", "vs_grpo", "wallclock_ratio_vs_grpo"),
              ("wallclock", "vs_grpo_passes", "wallclock_ratio_vs_grpo_passes"))


def _curve(rec: dict) -> list[dict]:
    return [{"step": s, "rollouts": n, "time/train_elapsed": t, "val/accuracy": a} for s, n, t, a in rec["val"]]


def paired(base: dict[int, dict[int, dict]], run: dict[int, dict[int, dict]], fn) -> dict[int, dict[int, object]]:
    """fn(baseline record, run record) for every (policy, seed) both have: the units of a paired comparison."""
    return {p: {s: fn(base[p][s], run[p][s]) for s in sorted(run[p]) if s in base.get(p, {})}
            for p in sorted(run) if p in base}


NOTHING = "nothing to reach"  # the baseline never improved on its start: a pair without a ratio
OTHER_CPU = "other CPU"  # the pair's runs were timed on different CPU models: no wall-clock ratio
LEFT_OUT = (NOTHING, OTHER_CPU)  # pairs without a ratio: counted, never ranked


def _cpu(rec: dict) -> str | None:
    return (rec.get("env") or {}).get("cpu")


def _ratio(kind: str):
    field = "rollouts_ratio" if kind == "rollouts" else "wallclock_ratio"

    def ratio(b: dict, r: dict):
        if kind == "wallclock" and _cpu(b) != _cpu(r):  # a grid continued on another machine: speeds differ
            return OTHER_CPU
        m = match_ratios(_curve(b), _curve(r))
        return NOTHING if m["nothing_to_reach"] else m[field]
    return ratio


def compare(base: dict, run: dict) -> dict:
    """Every paired effect of ``run`` against ``base``: rollouts and wall-clock ratios to reach the baseline's
    best, and the differences in best validation and in test accuracy of the best checkpoint."""
    out = {}
    for kind in ("rollouts", "wallclock"):
        units = paired(base, run, _ratio(kind))
        left = Counter(v for v in _flat(units).values() if v in LEFT_OUT)
        units = {p: kept for p, seeds in units.items()
                 if (kept := {s: v for s, v in seeds.items() if v not in LEFT_OUT})}
        out[f"{kind}_ratio"] = {**effect_summary(units, kind="ratio"), "per_run": _flat(units),
                                "reached": sum(v is not None for v in _flat(units).values()),
                                "nothing_to_reach": left[NOTHING],  # a run cannot beat a flat baseline
                                **({"other_cpu": left[OTHER_CPU]} if kind == "wallclock" else {})}
    for key in ("best_val", "test_of_best"):
        units = paired(base, run, lambda b, r, k=key: None if r[k] is None or b[k] is None else r[k] - b[k])
        out[f"{key}_diff"] = {**effect_summary(units, kind="difference"), "per_run": _flat(units)}
    shared = [rec["cores_shared"] for cell in (base, run) for seeds in cell.values() for rec in seeds.values()]
    out["wallclock_reliable"] = not any(shared)
    return out


def _flat(units: dict[int, dict[int, object]]) -> dict[str, object]:
    return {f"p{p}s{s}": v for p, seeds in units.items() for s, v in seeds.items()}


def cell_summary(cell: dict[int, dict[int, dict]]) -> dict:
    recs = [r for seeds in cell.values() for r in seeds.values()]

    def med(key, sub=None):
        xs = [(r[key] if sub is None else (r[key] or {}).get(sub)) for r in recs]
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    return {"n": len(recs), "policies": sorted(cell), "best_val": med("best_val"),
            "best_val_range": [min(r["best_val"] for r in recs), max(r["best_val"] for r in recs)],
            "test_of_best": med("test_of_best"), "step_s": med("step_s"), "alpha": med("alpha"),
            "kl_fast": med("kl_fast"), "cpu_per_wall": med("cpu_per_wall"),
            "phase_s": {k: med("phase_s", k) for k in ("time/rollout", "time/old_logprobs", "time/update")},
            "cores_shared": sum(r["cores_shared"] for r in recs)}


def sweep_units(cells: dict, task: str, method: str, cell: dict[int, dict[int, dict]]) -> dict:
    """The sweep's part of a cell: policy 0's seeds that ``method`` ran at two or more learning rates (the
    comparison's extra policies and seeds at a best lr are not sweep runs); the whole cell where the method ran
    at one lr only."""
    lrs = [c for (t, m, _), c in cells.items() if t == task and m == method]
    if len(lrs) < 2:
        return cell
    runs = Counter(s for c in lrs for s in c.get(0, {}))
    kept = {s: r for s, r in cell.get(0, {}).items() if runs[s] >= 2}
    return {0: kept} if kept else {}


def _best_of(task: str) -> str:
    """Whose best lr ``task`` is compared at, as the report words it: "its", or "arithmetic's"."""
    return "its best" if lrs_of(task) == task else f"{lrs_of(task)}'s best"


def _is_sweep(rows: dict) -> bool:
    """Whether a task's "method@lr" rows hold a learning-rate sweep: some method ran at two or more lrs."""
    methods = [name.split("@")[0] for name in rows]
    return len(methods) > len(set(methods))


def analyse(records: list[dict]) -> dict:
    cells = index(records)
    tasks = sorted({t for t, _, _ in cells})
    out: dict = {"sweep": {}, "best_lr": {}, "sweep_stability": {}, "main": {}}
    for task in SWEPT:
        stability = sweep_stability(records, task)
        if stability:
            out["sweep_stability"][task] = stability
    for task in tasks:
        rows = {}
        for (t, m, lr), cell in sorted(cells.items(), key=lambda kv: (kv[0][2], kv[0][1])):
            if t != task:
                continue
            cell = sweep_units(cells, task, m, cell)
            row = cell_summary(cell)
            for base in ("grpo", "grpo_4passes"):
                if (task, base, lr) in cells and m != base:
                    row[f"vs_{base}"] = compare(sweep_units(cells, task, base, cells[(task, base, lr)]), cell)
            rows[f"{m}@{lr:.0e}"] = row
        out["sweep"][task] = rows
        best = best_lrs(records, lrs_of(task))
        if best is None:
            continue
        out["best_lr"][task] = best
        main = {}
        for m in GRID_METHODS:
            cell = held_out(cells.get((task, m, best[m]), {}))
            if not cell:
                continue
            row = {"lr": best[m], **cell_summary(cell)}
            bases = [("grpo", "vs_grpo"), ("grpo_4passes", "vs_grpo_passes")]
            if m == "sfpo_tr":  # trust-region SFPO is also measured against SFPO
                bases.append((HEADLINE, "vs_sfpo"))
            for base, key in bases:
                b = held_out(cells.get((task, base, best[base]), {}))
                if b and m != base:
                    row[key] = compare(b, cell)
            main[m] = row
        if main:  # none until a comparison run lands
            out["main"][task] = main
    return out


def headline(analysis: dict) -> tuple[dict, str]:
    """results.json's historical keys (SFPO against GRPO and GRPO-(K+1)), from the arithmetic comparison at
    each method's best lr once it exists, else from the sweep at the base lr (named in the second value)."""
    main = analysis["main"].get("arithmetic", {}).get(HEADLINE)
    if main and main.get("n", 0) >= 3:
        row, source = main, "arithmetic, each method at its best learning rate"
    else:
        row = analysis["sweep"].get("arithmetic", {}).get(f"{HEADLINE}@1e-04")
        row = row and {"vs_grpo": row.get("vs_grpo"), "vs_grpo_passes": row.get("vs_grpo_4passes")}
        source = "arithmetic sweep at lr 1e-4 (the comparison at each method's best lr has not run yet)"
    out = {}
    for kind, vs, key in RATIO_KEYS:
        c = (row or {}).get(vs)
        if not c:
            out[key] = None
            continue
        e = c[f"{kind}_ratio"]
        vals = [v for v in e["per_run"].values() if v is not None]
        out[key] = {"median": e["point"], "ci": e["ci"], "verdict": e["verdict"], "per_seed": e["per_run"],
                    "spread": [min(vals), max(vals)] if vals else None, "reached": e["reached"], "n": e["n"]}
        if kind == "wallclock":
            out[key]["reliable"] = c["wallclock_reliable"]
    return out, source


def _f(v, fmt="{:.3f}"):
    return "—" if v is None else fmt.format(v)


def _ci(ci, fmt="{:.2f}") -> str:
    if ci is None:
        return "no interval"
    return "[" + ", ".join("never" if v is None else fmt.format(v) for v in ci) + "]"


def _effect(e: dict, fmt="{:.2f}", reliable: bool = True) -> str:
    if not e["n"] and e.get("other_cpu"):
        return f"no pair timed on one CPU ({e['other_cpu']} left out)"
    if not e["n"] and e.get("nothing_to_reach"):
        return f"{NOTHING} (n={e['nothing_to_reach']})"
    point = _f(e["point"], fmt) if e["point"] is not None else "never"
    note = "" if reliable else " ⚠ cores shared"
    left = f"; {e['other_cpu']} left out, timed on another CPU" if e.get("other_cpu") else ""
    return f"{point} {_ci(e['ci'], fmt)} {e['verdict']} (n={e['n']}{left}){note}"


def write_report(records: list[dict], total: int, waiting: list[str], report: Path, meta: dict) -> dict:
    analysis = analyse(records)
    head, source = headline(analysis)
    policies, builds = {}, {}
    for r in records:
        policies.setdefault(r["task"], {})[str(r["policy"])] = r["policy_info"]
        builds.setdefault(r["policy_info"]["folder"], set()).add(r["policy_info"]["sha256"])
    mixed = sorted(f for f, shas in builds.items() if len(shas) > 1)  # the harness refuses this; say it if seen
    seeds = sorted({r["seed"] for r in records})
    partial = len(records) < total or bool(waiting)
    results = {"partial": partial, "mixed_policies": mixed, "records": len(records), "planned": total,
               "waiting": waiting,
               "seeds": seeds, "policies": policies, "headline_method": HEADLINE, "headline_source": source,
               **head, "kl_budget": KL_BUDGET, "lrs": list(LRS), "meta": meta, **analysis}
    report.mkdir(parents=True, exist_ok=True)
    (report / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")

    md = ["# Reproduction: SFPO vs GRPO vs GRPO with K+1 passes on the CPU testbed", "",
          "Generated by `sfpo reproduce --analyse-only` from the run records in `docs/reproduction/records/`; "
          "the commands that made the records are in `benchmarks/reproduce.sh`.", ""]
    if partial:
        md += [f"**Partial:** runs finished: {len(records)} of the {total} planned so far"
               + (f"; not planned yet: {'; '.join(waiting)}" if waiting else "") + ". Every number below is "
               "from the finished runs only, and will move as the grid completes.", ""]
    md += ["Ratios are baseline cost ÷ run cost to first reach the baseline's best validation accuracy (above 1: "
           "the run got there cheaper; `never`: it did not reach it, ranked below every ratio; `nothing to reach`: the "
           "baseline never improved on its start, so there is no ratio and the pair is left out). Each effect is "
           "paired (same starting policy, same seed) and comes with a 95% two-level bootstrap interval over "
           "policies × seeds (`sfpo.compare.bootstrap_ci`); the verdict says **within noise** whenever the "
           "interval includes no effect, and *too few runs* below 3 paired runs (one run has no interval). "
           "Runs are one thread each; a run whose CPU time was under "
           f"{SHARED_BELOW:.0%} of its wall time shared its core, and wall-clock ratios that involve such runs are "
           "marked ⚠ (unreliable). A wall-clock ratio needs both runs timed on one CPU model (`env.cpu` of the "
           "records): a pair split across machines, as a grid continued in another session can be, is left out of "
           "the wall-clock effect and counted. Rollout counts are unaffected by shared cores or machines.", "",
           "## Findings (computed)", ""]
    if mixed:
        md += [f"- ⚠ **Mixed starting policies:** records of {', '.join(mixed)} were made from different builds "
               "(sha256), so their pairs do not start from the same weights: the comparisons below are not paired "
               "where they meet."]
    md += [f"- {f}" for f in findings(results)]
    if results["main"]:
        md += ["", "Each method against each baseline, paired by policy and seed:", "", *comparisons(results)]
    notes = report.parent / f"{report.name}_notes.md"
    if notes.exists():  # linked, not copied: the prose is written by hand and lives in one place
        titles = [ln.removeprefix("## ").split(" (written by hand")[0] for ln in notes.read_text().splitlines()
                  if ln.startswith("## ")]
        md += ["", f"Written by hand beside these numbers, in [{notes.name}]({notes.name}): "
               + "; ".join(titles) + "."]
    md += ["", "## Starting policies", "", "| task | warm-start seed | shipped | steps | probe pass@1 | sha256 "
           "(model.safetensors) |", "|---|---|---|---|---|---|"]
    for task, ps in sorted(policies.items()):
        for p, info in sorted(ps.items()):
            md.append(f"| {task} | {p} | {'yes' if info['shipped'] else 'no'} | {info['steps_trained']} | "
                      f"{info['probe_pass1']} | `{info['sha256'][:16]}…` |")
    plot_report(records, analysis, report)
    for task, main in analysis["main"].items():
        md += ["", f"## {task}: each method at {_best_of(task)} learning rate"
               + ("" if lrs_of(task) == task else f" ({task} was not swept)"), ""]
        if (report / f"{task}_best_lr.png").exists():
            md += [f"![{task}: validation curves at each method's best lr]({report.name}/{task}_best_lr.png)", ""]
        md += ["| method | lr | runs (policies) | best val | test of best | rollouts ratio vs GRPO | vs GRPO-4 | "
               "Δ best val vs GRPO | Δ test vs GRPO | wall-clock ratio vs GRPO | rollout / old log-probs / "
               "update (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, row in main.items():
            md.append(_main_row(m, row))
    if (report / "lr_sweep.png").exists():
        md += ["", f"![learning-rate sweeps]({report.name}/lr_sweep.png)"]
    for task, rows in analysis["sweep"].items():
        if not _is_sweep(rows):  # each method at one lr (borrowed from another task's sweep): not a sweep
            continue
        md += ["", f"## {task}: learning-rate sweep (ratios against the baseline at the same lr)", "",
               "| method @ lr | runs | best val [min, max] | test of best | rollouts ratio vs GRPO | vs GRPO-4 | "
               "Δ best val vs GRPO | wall-clock ratio vs GRPO | rollout / old log-probs / update (s) | α |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in rows.items():
            vg, vp = row.get("vs_grpo"), row.get("vs_grpo_4passes")
            ph = row["phase_s"]
            md.append(f"| {name} | {row['n']} | {_f(row['best_val'])} [{_f(row['best_val_range'][0])}, "
                      f"{_f(row['best_val_range'][1])}] | {_f(row['test_of_best'])} | "
                      f"{_effect(vg['rollouts_ratio']) if vg else '—'} | "
                      f"{_effect(vp['rollouts_ratio']) if vp else '—'} | "
                      f"{_effect(vg['best_val_diff'], '{:+.3f}') if vg else '—'} | "
                      f"{_effect(vg['wallclock_ratio'], reliable=vg['wallclock_reliable']) if vg else '—'} | "
                      f"{_f(ph['time/rollout'], '{:.2f}')} / {_f(ph['time/old_logprobs'], '{:.2f}')} / "
                      f"{_f(ph['time/update'], '{:.2f}')} | {_f(row['alpha'], '{:.2f}')} |")
    old = report / "record_2026-11-30.json"
    if old.exists():
        md += ["", "## The previous record (2026-11-30)", "",
               f"One policy × 3 seeds at lr 1e-4, before the policies shipped: `{old.relative_to(report.parent)}` "
               "(SFPO with the entropy switch). Its prose is kept in "
               "`docs/reproduction_notes.md`."]
    (report.parent / f"{report.name}.md").write_text("\n".join(md) + "\n")
    return results


COLORS = {"grpo": "tab:blue", "grpo_4passes": "tab:orange", "sfpo_noswitch": "tab:green", "sfpo_tr": "tab:red"}


def plot_report(records: list[dict], analysis: dict, report: Path) -> list[Path]:
    """PNGs beside the report: per task, each method at its best lr, the gain in validation accuracy over the
    run's own start (so that policies starting at different accuracies line up; each held-out run thin, the
    median over runs thick) against rollouts and against training time; and the lr sweeps."""
    from sfpo.plots import pyplot

    plt, cells, out = pyplot(), index(records), []
    for task in analysis["main"]:
        best = analysis["best_lr"][task]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for m in GRID_METHODS:
            runs = [r for seeds in held_out(cells.get((task, m, best[m]), {})).values() for r in seeds.values()]
            if not runs:
                continue
            n = min(len(r["val"]) for r in runs)
            for ax, col in zip(axes, (1, 2)):
                for r in runs:
                    ax.plot([v[col] for v in r["val"]], [v[3] - r["val"][0][3] for v in r["val"]], color=COLORS[m],
                            lw=0.5, alpha=0.35)
                ax.plot([statistics.median(r["val"][i][col] for r in runs) for i in range(n)],
                        [statistics.median(r["val"][i][3] - r["val"][0][3] for r in runs) for i in range(n)],
                        color=COLORS[m], lw=2, label=f"{LABELS.get(m, m)}, lr {best[m]:.0e} ({len(runs)} runs)")
        gain = "validation accuracy gain over the start"
        axes[0].set(xlabel="rollouts", ylabel=gain, title=f"{task}: each method at {_best_of(task)} lr (avg@4)")
        axes[1].set(xlabel="training time (s, one thread)", ylabel=gain, title="the same against training time")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        out.append(report / f"{task}_best_lr.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    tasks = [t for t, rows in analysis["sweep"].items() if _is_sweep(rows)]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for m in GRID_METHODS:
                pts = sorted((float(k.split("@")[1]), row["best_val"]) for k, row in analysis["sweep"][task].items()
                             if k.split("@")[0] == m)
                if pts:
                    ax.plot(*zip(*pts), marker="o", color=COLORS[m], label=LABELS.get(m, m))
            ax.set(xscale="log", xlabel="learning rate", ylabel="best validation accuracy",
                   title=f"{task}: lr sweep (policy 0, median over its seeds)")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        out.append(report / "lr_sweep.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    return out


def _main_row(m: str, row: dict) -> str:
    vg, vp = row.get("vs_grpo"), row.get("vs_grpo_passes")
    ph = row["phase_s"]
    return (f"| {LABELS.get(m, m)} | {row['lr']:.0e} | {row['n']} ({len(row['policies'])}) | {_f(row['best_val'])} "
            f"| {_f(row['test_of_best'])} | {_effect(vg['rollouts_ratio']) if vg else '1'} | "
            f"{_effect(vp['rollouts_ratio']) if vp else ('1' if m == 'grpo_4passes' else '—')} | "
            f"{_effect(vg['best_val_diff'], '{:+.3f}') if vg else '0'} | "
            f"{_effect(vg['test_of_best_diff'], '{:+.3f}') if vg else '0'} | "
            f"{_effect(vg['wallclock_ratio'], reliable=vg['wallclock_reliable']) if vg else '1'} | "
            f"{_f(ph['time/rollout'], '{:.2f}')} / {_f(ph['time/old_logprobs'], '{:.2f}')} / "
            f"{_f(ph['time/update'], '{:.2f}')} |")


def findings(results: dict) -> list[str]:
    """Plain sentences computed from the intervals: an effect is claimed only when its interval excludes none."""
    head = []
    for kind, vs, key in RATIO_KEYS:
        b = results.get(key)
        if not b:
            continue
        base = "GRPO" if vs == "vs_grpo" else "GRPO with K+1 passes"
        words = {"higher": "SFPO cheaper", "lower": "SFPO costlier", "within noise": "within noise",
                 "not measurable": "not measurable", "too few runs": "too few runs for a verdict"}[b["verdict"]]
        unreliable = kind == "wallclock" and not b.get("reliable", True)
        point = "never (the median run did not reach it)" if b["median"] is None else f"{b['median']:.2f}×"
        head.append(f"{kind} to reach the best of {base} {point} (95% CI {_ci(b['ci'])}, {b['n']} runs, reached in "
                    f"{b['reached']}): **{words}**"
                    + (" — unreliable: the cores were shared during some of these runs" if unreliable else ""))
    out = [f"Headline ({LABELS[HEADLINE]} vs the baselines; {results['headline_source']}): "
           + ("; ".join(head) + "." if head else "not measured yet.")]
    for task, methods in results.get("sweep_stability", {}).items():
        held = [m for m, v in methods.items() if set(v["per_seed"].values()) == {v["chosen"]}]
        seeds = sorted({s for v in methods.values() for s in v["per_seed"]})
        moved = [f"{LABELS.get(m, m)} {v['chosen']:.0e} on seed {SELECT[1]}, "
                 + ", ".join(f"{lr:.0e} on seed {s}" for s, lr in v["per_seed"].items() if s != SELECT[1])
                 + f"; by the seeds' mean {v['by_mean']:.0e}" for m, v in methods.items() if m not in held]
        out.append(f"{task} sweep, repeated on seeds {', '.join(map(str, seeds))} (policy 0): each seed on its own "
                   f"picks the same learning rate for {len(held)} of {len(methods)} methods"
                   + (f" ({', '.join(LABELS.get(m, m) for m in held)})" if held and moved else "")
                   + (f"; it moved for {'; '.join(moved)}" if moved else "")
                   + f". The comparison keeps the selection unit's choice (seed {SELECT[1]}).")
    return out


def comparisons(results: dict) -> list[str]:
    """Every paired comparison at each method's best lr, as markdown table rows: a verdict is claimed only when
    its interval excludes no effect."""
    out = ["| task | run (lr) | vs (each at its best lr) | runs | rollouts to reach its best | Δ best val | "
           "Δ test of the best |", "|---|---|---|---|---|---|---|"]
    names = {"vs_grpo": "GRPO", "vs_grpo_passes": "GRPO-4", "vs_sfpo": "SFPO"}
    for task, main in results["main"].items():
        for m, row in main.items():
            for vs, base in names.items():
                c = None if m == "grpo" else row.get(vs)  # GRPO against GRPO-4 is GRPO-4's line read backwards
                if not c:
                    continue
                r, v, t = c["rollouts_ratio"], c["best_val_diff"], c["test_of_best_diff"]
                if not r["n"] and r.get("nothing_to_reach"):
                    reach = f"{NOTHING} (the baseline never improved)"
                else:
                    point = "never" if r["point"] is None else format(r["point"], ".2f") + "×"
                    reach = f"{point} {_ci(r['ci'])} **{r['verdict']}**"
                own = "" if lrs_of(task) == task else f" ({lrs_of(task)}'s lrs)"
                out.append(f"| {task}{own} | {LABELS.get(m, m)} ({row['lr']:.0e}) | {base} | {v['n']} | {reach} | "
                           f"{_f(v['point'], '{:+.3f}')} {_ci(v['ci'], '{:+.3f}')} **{v['verdict']}** | "
                           f"{_f(t['point'], '{:+.3f}')} {_ci(t['ci'], '{:+.3f}')} **{t['verdict']}** |")
    return out
