"""Issue 24's report: does any reposition beat simply training more passes? The α sweep through 1, outer
Nesterov momentum, and the plateau regime, each against GRPO with the same K+1 passes per batch (GRPO-4), with
the same paired two-level bootstrap intervals as the main report. Built from the run records alone
(`sfpo reproduce --grid issue24 --analyse-only`): docs/reproduction/beyond_sfpo.md,
results_beyond.json, beyond_alpha.png and beyond_plateau.png."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from sfpo.reproduce.grid import (ALPHA_SWEEP, ALPHA_SWEEP_LR, MOMENTA, MOMENTUM_LRS, PLATEAU, POLICIES, SEEDS, SELECT,
                                 SWEPT, best_lrs, held_out, index, momentum_choice)
from sfpo.reproduce.report import _effect, _f, cell_summary, compare

CONTROL = "grpo_4passes"  # the matched control: K+1 = 4 plain passes per batch (α = 1 exactly)
BASELINES = {"grpo": "GRPO", CONTROL: "GRPO-4"}  # the long runs' baselines, as the answer names them


def _cell(cells: dict, task: str, method: str, lr: float) -> dict:
    return held_out(cells.get((task, method, lr), {}))


def _row(cells: dict, task: str, method: str, lr: float, bases: dict[str, float]) -> dict | None:
    cell = _cell(cells, task, method, lr)
    if not cell:
        return None
    row = {"lr": lr, **cell_summary(cell)}
    for base, base_lr in bases.items():
        if base != method and (base_cell := _cell(cells, task, base, base_lr)):
            row[f"vs_{base}"] = compare(base_cell, cell)
    return row


def smoothed(val: list[list], k: int) -> list[tuple[int, float]]:
    """(step, mean accuracy of the last ``k`` evaluations) for each evaluation from the k-th on."""
    acc = [v[3] for v in val]
    return [(val[i][0], sum(acc[i - k + 1:i + 1]) / k) for i in range(k - 1, len(val))]


def plateau_step(rec: dict, window: int = PLATEAU["window"], min_gain: float = PLATEAU["min_gain"],
                 smooth: int = PLATEAU["smooth"]) -> int | None:
    """The first step at which the run's smoothed validation accuracy has not risen by more than ``min_gain``
    over the previous ``window`` steps (the criterion fixed in sfpo.reproduce.grid.PLATEAU); None if it never held."""
    curve = dict(smoothed(rec["val"], smooth))
    for step, acc in curve.items():
        if step - window in curve and acc - curve[step - window] <= min_gain:
            return step
    return None


def end_gain(rec: dict, window: int = PLATEAU["window"], smooth: int = PLATEAU["smooth"]) -> float | None:
    """How much the run's smoothed validation accuracy rose over its last ``window`` steps: a run whose curve
    still rises at its end had not plateaued there, whatever the criterion said earlier."""
    curve = dict(smoothed(rec["val"], smooth))
    last = max(curve, default=None)
    return None if last is None or last - window not in curve else curve[last] - curve[last - window]


def long_run(rec: dict) -> dict:
    return {"plateau_step": plateau_step(rec), "best_step": rec["best_step"], "end_gain": end_gain(rec),
            "best_val": rec["best_val"], "test_of_best": rec["test_of_best"], "steps": rec["steps"]}


def analyse_beyond(records: list[dict]) -> dict:
    cells = index(records)
    best = {t: best_lrs(records, t) for t in SWEPT}
    out: dict = {"control": CONTROL, "alpha": {}, "momentum_sweep": {}, "momentum_choice": None,
                 "momentum": {}, "plateau": {}, "plateau_runs": {}}
    # (1) α through 1 on arithmetic, every α at the same lr; α = 1 is the control itself
    for a, method in sorted(ALPHA_SWEEP.items()):
        row = _row(cells, "arithmetic", method, ALPHA_SWEEP_LR, {"grpo": best["arithmetic"]["grpo"],
                                                                 CONTROL: ALPHA_SWEEP_LR})
        if row:
            out["alpha"][str(a)] = {"method": method, **row}
    # (2) the momentum sweep on the selection unit
    for mu in MOMENTA:
        for lr in MOMENTUM_LRS:
            rec = cells.get(("arithmetic", f"sfpo_mom{mu}", lr), {}).get(SELECT[0], {}).get(SELECT[1])
            if rec:
                out["momentum_sweep"][f"{mu}@{lr:.0e}"] = {"mu": mu, "lr": lr, "best_val": rec["best_val"],
                                                            "test_of_best": rec["test_of_best"]}
    choice = momentum_choice(records)
    if choice:
        out["momentum_choice"] = {"mu": choice[0], "lr": choice[1]}
        method = f"sfpo_mom{choice[0]}"
        for task in SWEPT:
            row = _row(cells, task, method, choice[1], {"grpo": best[task]["grpo"],
                                                        CONTROL: best[task][CONTROL],
                                                        "sfpo_noswitch": best[task]["sfpo_noswitch"]})
            if row:
                out["momentum"][task] = {"method": method, **row}
    # (3) the plateau regime: the baseline's best is reached-for only where the baseline plateaued
    long = {(m, lr): c for (t, m, lr), c in cells.items() if t == "arith_long"}
    for (m, _), cell in sorted(long.items()):
        out["plateau_runs"][m] = {f"p{p}s{s}": long_run(r) for p, seeds in sorted(cell.items())
                                  for s, r in sorted(seeds.items())}
    for base in BASELINES:
        base_cell = next((c for (m, _), c in long.items() if m == base), None)
        if not base_cell:
            continue
        stop = {(p, s): out["plateau_runs"][base][f"p{p}s{s}"]["plateau_step"]
                for p, seeds in base_cell.items() for s in seeds}
        plateaued = {p: {s: r for s, r in seeds.items() if stop[p, s] is not None}
                     for p, seeds in base_cell.items()}
        plateaued = {p: seeds for p, seeds in plateaued.items() if seeds}
        entry = {"plateau_steps": {f"p{p}s{s}": v for (p, s), v in stop.items()}, "vs": {}}
        for (m, lr), cell in sorted(long.items()):
            if m != base and plateaued:
                entry["vs"][m] = compare(plateaued, cell)
        out["plateau"][base] = entry
    out["answer"] = answer(out)
    return out


def _beats(row: dict | None) -> bool | None:
    """Whether a row is above the control with an interval that excludes no effect, on best validation or on
    test accuracy, and not below it on the other; None while the comparison is missing or has too few runs."""
    c = (row or {}).get(f"vs_{CONTROL}")
    if not c:
        return None
    verdicts = (c["best_val_diff"]["verdict"], c["test_of_best_diff"]["verdict"])
    if "too few runs" in verdicts or "not measurable" in verdicts:
        return None
    return "higher" in verdicts and "lower" not in verdicts


def answer(out: dict) -> str:
    """The one-paragraph answer, computed from the analysis (never typed by hand)."""
    parts = []
    alpha = {a: _beats(r) for a, r in out["alpha"].items() if a != "1.0"}
    done = {a: b for a, b in alpha.items() if b is not None}
    if done:
        winners = [a for a, b in done.items() if b]
        parts.append(f"α sweep (arithmetic, {len(done)} α ≠ 1 measured): "
                     + (f"α = {', '.join(winners)} beat GRPO-4" if winners else "no α beats GRPO-4 (α = 1)")
                     + (f"; still running: α = {', '.join(a for a in alpha if a not in done)}"
                        if len(done) < len(alpha) else "") + ".")
    else:
        parts.append("α sweep: not enough held-out runs yet.")
    if out["momentum_choice"]:
        c = out["momentum_choice"]
        both = {t: _beats(out["momentum"].get(t)) for t in SWEPT}
        if all(v is not None for v in both.values()):
            won = [t for t, v in both.items() if v]
            verdict = ("beats GRPO-4 on both tasks" if len(won) == len(both) else
                       "beats GRPO-4 on neither task" if not won else
                       f"beats GRPO-4 on {', '.join(won)} only")
        else:
            verdict = "its held-out comparison has not finished"
        parts.append(f"Outer momentum (chosen μ = {c['mu']}, lr {c['lr']:.0e}): {verdict}.")
    else:
        parts.append("Outer momentum: its sweep has not finished.")
    if out["plateau"].get("grpo"):
        said = []
        for base, label in BASELINES.items():
            steps = out["plateau"].get(base, {}).get("plateau_steps", {})
            said.append(f"{label} met the plateau criterion in "
                        f"{sum(v is not None for v in steps.values())} of {len(steps)} long runs")
        vs = out["plateau"].get(CONTROL, {}).get("vs", {})
        others = [f"{m} {_diff(e['best_val_diff'])}" for m, e in vs.items() if m != "grpo"]
        runs = out.get("plateau_runs", {})
        gains = {m: [r["end_gain"] for r in rs.values() if r["end_gain"] is not None] for m, rs in runs.items()}
        every = [g for gs in gains.values() for g in gs]
        rising = sum(g > PLATEAU["min_gain"] for g in every)
        per_base = ", ".join(f"{label} {sum(g > PLATEAU['min_gain'] for g in gains[b])} of {len(gains[b])}"
                             for b, label in BASELINES.items() if gains.get(b))
        first_best = min((r["best_step"] for rs in runs.values() for r in rs.values()), default=None)
        parts.append("Plateau (arithmetic, 600 steps): " + ", ".join(said)
                     + (f"; best validation against GRPO-4's where it plateaued: {'; '.join(others)}" if others else "")
                     + ".")
        if rising:
            parts.append(f"But the curves had not flattened: {rising} of {len(every)} long runs ({per_base}) still rose "
                         f"by more than {PLATEAU['min_gain']} over their last {PLATEAU['window']} steps (smoothed gains "
                         f"{min(every):+.3f} to {max(every):+.3f} across all {len(every)}), and every run's best came at "
                         f"step {first_best} or later: the criterion caught pauses, not the end of learning.")
    else:
        parts.append("Plateau regime: not run yet.")
    return " ".join(parts)


def _diff(e: dict) -> str:
    return _effect(e, "{:+.3f}")


def write_beyond_report(records: list[dict], done: int, total: int, waiting: list[str], report: Path,
                        meta: dict) -> dict:
    """``records``: all of them (the main grid's sweeps choose the baselines' lrs); ``done`` of the ``total``
    runs planned for issue 24 have one."""
    analysis = analyse_beyond(records)
    partial = done < total or bool(waiting)
    results = {"partial": partial, "records": done, "planned": total, "waiting": waiting,
               "plateau_criterion": PLATEAU, "policies": list(POLICIES), "seeds": list(SEEDS), "meta": meta,
               **analysis}
    report.mkdir(parents=True, exist_ok=True)
    (report / "results_beyond.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = ["# Beyond SFPO: does any reposition beat simply training more passes?", "",
          "Generated by `sfpo reproduce --grid issue24 --analyse-only` from the run records in "
          "`docs/reproduction/records/` (issue 24). Every effect is paired (same starting policy, same seed) "
          "against **GRPO-4** — GRPO with the same K+1 = 4 passes per batch, the control the paper leaves out — "
          "with a 95% two-level bootstrap interval over policies × seeds; the selection unit (policy 0, seed 0) "
          "is left out of every comparison. Method names are the records' own; every SFPO variant here runs "
          "with the entropy switch **off**.", ""]
    if partial:
        md += [f"**Partial:** {done} of {total} planned runs have records"
               + (f"; not planned yet: {'; '.join(waiting)}" if waiting else "") + ".", ""]
    md += [f"**Answer{' so far' if partial else ''}:** " + analysis["answer"], ""]
    md += ["## 1. The α sweep through 1 (arithmetic, lr " + f"{ALPHA_SWEEP_LR:.0e}, K = 3)", "",
           "θ̃ = θ0 + α(θK − θ0): α < 1 pulls back toward θ0 (the paper's SFPO, α = 0.8), α = 1 is GRPO-4 bit for "
           "bit, α > 1 extrapolates along the fast trajectory.", "",
           "| α | method | runs | best val (median) | test (median) | Δ best val vs GRPO-4 | Δ test vs GRPO-4 | "
           "rollouts to GRPO-4's best | rollouts to GRPO's best |", "|---|---|---|---|---|---|---|---|---|"]
    for a, row in analysis["alpha"].items():
        c, g = row.get(f"vs_{CONTROL}"), row.get("vs_grpo")
        md.append(f"| {a} | `{row['method']}` | {row['n']} | {_f(row['best_val'])} | {_f(row['test_of_best'])} | "
                  + (f"{_diff(c['best_val_diff'])} | {_diff(c['test_of_best_diff'])} | "
                     f"{_effect(c['rollouts_ratio'])} |" if c else "— (the control) | — | — |")
                  + (f" {_effect(g['rollouts_ratio'])} |" if g else " — |"))
    md += ["", "![effect of α against GRPO-4](beyond_alpha.png)", ""]
    md += ["## 2. Outer Nesterov momentum", "",
           "m ← μm + (θK − θ0), θ̃ = θ0 + α((θK − θ0) + μm) (`algorithm.outer_momentum`; μ = 0 is SFPO bit for "
           "bit). Sweep on the selection unit (arithmetic, policy 0, seed 0), best validation accuracy:", "",
           "| μ \\ lr | " + " | ".join(f"{lr:.0e}" for lr in MOMENTUM_LRS) + " |",
           "|---|" + "---|" * len(MOMENTUM_LRS)]
    for mu in MOMENTA:
        cells = [analysis["momentum_sweep"].get(f"{mu}@{lr:.0e}") for lr in MOMENTUM_LRS]
        md.append(f"| {mu} | " + " | ".join(_f(c and c["best_val"]) for c in cells) + " |")
    choice = analysis["momentum_choice"]
    md += ["", f"Chosen: μ = {choice['mu']}, lr {choice['lr']:.0e} (highest best validation; it then runs on the "
               "held-out units of both tasks, countdown at arithmetic's choice)." if choice else
           "The sweep has not finished; nothing is chosen yet.", ""]
    if analysis["momentum"]:
        md += ["| task | runs | Δ best val vs GRPO-4 | Δ test vs GRPO-4 | Δ test vs SFPO | rollouts to GRPO-4's best |",
               "|---|---|---|---|---|---|"]
        for task, row in analysis["momentum"].items():
            c, s = row.get(f"vs_{CONTROL}"), row.get("vs_sfpo_noswitch")
            md.append(f"| {task} | {row['n']} | " + (f"{_diff(c['best_val_diff'])} | {_diff(c['test_of_best_diff'])}"
                                                     if c else "— | —")
                      + f" | {_diff(s['test_of_best_diff']) if s else '—'} | "
                      + (f"{_effect(c['rollouts_ratio'])} |" if c else "— |"))
        md.append("")
    md += ["## 3. The plateau regime (arithmetic, policy 0 × 3 seeds, 600 steps)", "",
           f"Criterion, fixed before any long run: a run has plateaued at the first step where its validation "
           f"accuracy, averaged over the last {PLATEAU['smooth']} evaluations, has risen by at most "
           f"{PLATEAU['min_gain']} over the previous {PLATEAU['window']} steps. Rollouts to reach a baseline's best "
           "are measured only on the seeds where that baseline plateaued.", ""]
    if analysis["plateau_runs"]:
        md += [f"| method | runs | best val (median) | test (median) | best at step | plateau by the criterion at step | "
               f"smoothed gain over the last {PLATEAU['window']} steps |", "|---|---|---|---|---|---|---|"]
        for m, runs in analysis["plateau_runs"].items():
            rs = list(runs.values())
            md.append(f"| `{m}` | {len(rs)} | {_f(statistics.median(r['best_val'] for r in rs))} | "
                      f"{_f(statistics.median(r['test_of_best'] for r in rs))} | "
                      + ", ".join(str(r["best_step"]) for r in rs) + " | "
                      + ", ".join(str(r["plateau_step"]) if r["plateau_step"] is not None else "never" for r in rs)
                      + " | " + ", ".join("—" if r["end_gain"] is None else f"{r['end_gain']:+.3f}" for r in rs)
                      + " |")
        md += ["", "Seeds in the order " + ", ".join(next(iter(analysis["plateau_runs"].values()))) + ".", "",
               "![validation accuracy of the long runs](beyond_plateau.png)", ""]
    if analysis["plateau"]:
        for base, entry in analysis["plateau"].items():
            steps = ", ".join(f"{u}: {'step ' + str(v) if v is not None else 'never'}"
                              for u, v in entry["plateau_steps"].items())
            md.append(f"- `{base}` plateaued by the criterion at — {steps}.")
            for m, c in entry["vs"].items():
                md.append(f"  - `{m}` to reach `{base}`'s best: rollouts {_effect(c['rollouts_ratio'])}; "
                          f"Δ best val {_diff(c['best_val_diff'])}; Δ test {_diff(c['test_of_best_diff'])}.")
        md.append("")
    else:
        md += ["Not run yet.", ""]
    (report / "beyond_sfpo.md").write_text("\n".join(md))
    plot_alpha(analysis, report / "beyond_alpha.png")
    if analysis["plateau_runs"]:
        plot_plateau(records, analysis, report / "beyond_plateau.png")
    return results



def plot_alpha(analysis: dict, path: Path) -> None:
    """Δ best validation and Δ test against GRPO-4 as a function of α, with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label, shift in (("best_val_diff", "best validation", -0.01), ("test_of_best_diff", "test", 0.01)):
        xs, ys, lo, hi = [], [], [], []
        for a, row in analysis["alpha"].items():
            c = row.get(f"vs_{CONTROL}")
            e = c[key] if c else {"point": 0.0, "ci": [0.0, 0.0]}  # α = 1 is the control: zero by definition
            if e["point"] is None:
                continue
            ci = e["ci"] or [e["point"], e["point"]]
            xs.append(float(a) + shift)
            ys.append(e["point"])
            lo.append(e["point"] - ci[0])
            hi.append(ci[1] - e["point"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("α (1 = GRPO-4; < 1 SFPO's pull-back; > 1 extrapolation)")
    ax.set_ylabel("accuracy − GRPO-4's (95% CI)")
    ax.set_title("arithmetic, lr 3e-5, held-out policies × seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_plateau(records: list[dict], analysis: dict, path: Path) -> None:
    """The long runs' smoothed validation accuracy against rollouts: each seed faint, their mean bold, and a
    cross where the plateau criterion fired."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = PLATEAU["smooth"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (m, long) in enumerate(analysis["plateau_runs"].items()):
        color = f"C{i}"
        runs = [r for r in records if r["task"] == "arith_long" and r["method"] == m]
        curves = []
        for r in runs:
            rollouts = {v[0]: v[1] for v in r["val"]}
            acc = dict(smoothed(r["val"], k))
            curve = [(rollouts[s], a) for s, a in acc.items()]
            curves.append(curve)
            ax.plot([x for x, _ in curve], [y for _, y in curve], color=color, lw=0.6, alpha=0.35)
            stop = long[f"p{r['policy']}s{r['seed']}"]["plateau_step"]  # computed once, in analyse_beyond
            if stop is not None:
                ax.plot(rollouts[stop], acc[stop], "x", color=color, ms=7)
        n = min(len(c) for c in curves)
        ax.plot([c[0] for c in curves[0][:n]], [sum(c[j][1] for c in curves) / len(curves) for j in range(n)],
                color=color, lw=2, label=f"{m} (mean of {len(curves)})")
    ax.set_xlabel("rollouts")
    ax.set_ylabel(f"validation accuracy (mean of last {k} evaluations)")
    ax.set_title("arithmetic, policy 0, 600 steps; × = plateau criterion fired")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
