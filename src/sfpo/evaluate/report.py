"""The ``sfpo eval`` report: per run, every checkpoint's per-benchmark and macro avg@k / pass@j, the last
checkpoint and the best one with how it was selected; as a dict (eval.json), markdown (eval.md) and one JSON line."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sfpo.evaluate.checkpoints import Checkpoint
from sfpo.evaluate.specs import Job
from sfpo.evaluate.store import EvalSettings, ResultStore, result_key

__all__ = ["metrics", "build_report", "render_markdown", "summary_line"]


def metrics(record: dict[str, Any], pass_at: list[int]) -> dict[str, float]:
    from sfpo.evaluate import pass_at_k

    k, correct = record["k"], record["per_prompt_correct"]
    n = max(len(correct), 1)
    out = {"avg@k": sum(c / k for c in correct) / n}
    for j in pass_at:
        out[f"pass@{j}"] = sum(pass_at_k(k, c, j) for c in correct) / n
    out["mean_reward"] = record["mean_reward"]
    out["num_prompts"] = len(correct)
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _selection_note(bench: list[Job], select: list[Job], split: str) -> tuple[str, str]:
    """(kind, sentence) describing what picks the best checkpoint: "held-out", "reported" or "none"."""
    if not select:
        return "none", (f"No checkpoint selection: no benchmark has a {split!r} split and no --select-task was "
                        "given. Pass the training task as --select-task (its validation rows are held out of "
                        "training), or --select-split test to select on the reported test sets as the paper did.")
    names = ", ".join(f"{j.label}/{j.split} ({j.num_prompts or 'all'} prompts)" for j in select)

    def data(j: Job) -> str:  # the prompt count does not matter: a subset of a reported split is reported data
        return json.dumps({**j.ident(), "num_prompts": None}, sort_keys=True, default=str)

    if {data(j) for j in select} & {data(j) for j in bench}:
        return "reported", (f"Best = highest macro avg@k on {names}, data this report also scores (the paper's "
                            "protocol): the best checkpoint's numbers are optimistic.")
    return "held-out", f"Best = highest macro avg@k on {names}; the reported benchmarks played no part in it."


def build_report(checkpoints: list[Checkpoint], bench: list[Job], select: list[Job], settings: EvalSettings,
                 store: ResultStore, pass_at: list[int] | None = None, select_split: str = "validation"
                 ) -> dict[str, Any]:
    """Per run: every checkpoint's per-benchmark and macro numbers, the last checkpoint and the selected best."""
    pass_at = pass_at or [settings.k]
    kind, note = _selection_note(bench, select, select_split)
    runs: dict[str, list[Checkpoint]] = {}
    for c in checkpoints:
        runs.setdefault(c.run, []).append(c)
    out_runs = []
    for run, ckpts in runs.items():
        rows = []
        for c in ckpts:
            per = {j.label: metrics(store.get(result_key(c, j, settings)), pass_at) for j in bench}
            macro = {m: _mean([per[j.label][m] for j in bench]) for m in ["avg@k"] + [f"pass@{x}" for x in pass_at]}
            # a lone checkpoint has nothing to be selected against, so its selection set is not sampled
            sel = [metrics(store.get(result_key(c, j, settings)), pass_at)["avg@k"] for j in select] \
                if len(ckpts) > 1 else []
            rows.append({"checkpoint": c.name, "path": c.path, "step": c.step, "benchmarks": per, "macro": macro,
                         "select_score": _mean(sel)})
        steps = [r for r, c in zip(rows, ckpts) if c.is_step]
        last = max(steps, key=lambda r: r["step"]) if steps else (rows[0] if len(rows) == 1 else None)
        if len(rows) == 1:
            best, how = rows[0], "the only checkpoint: nothing to select"
        elif select:
            best = max(rows, key=lambda r: r["select_score"])  # max keeps the first of equals: the earlier one
            how = note
        else:
            best, how = None, note
        entry = {"run": run, "checkpoints": rows, "last": last and last["checkpoint"],
                 "best": best and best["checkpoint"], "selected_on": how, "selection": kind}
        if not steps and last is not None and any(c.name == "best" and c.run != c.path for c in ckpts):
            entry["last_note"] = "no step_* checkpoint is left in the run: best/ stands in for the last"
        out_runs.append(entry)
    return {"settings": asdict(settings), "pass_at": pass_at, "benchmarks": [j.label for j in bench],
            "benchmark_splits": {j.label: j.split for j in bench},
            "selection": {"kind": kind, "split": select_split, "tasks": [f"{j.label}/{j.split}" for j in select],
                          "note": note}, "runs": out_runs}


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    s, j = report["settings"], max(report["pass_at"])
    k = s["k"]
    lines = [f"# sfpo eval: avg@{k} / pass@{j} (%)", "",
             f"Sampling: k={k}, temperature {s['temperature']}, top-p {s['top_p']}, at most {s['max_new_tokens']} "
             f"new tokens, seed {s['seed']}, {s['batch_prompts']} prompts per batch, engine {s['engine']} "
             f"({s['dtype']}). Benchmarks: " + ", ".join(f"{b} ({sp})" for b, sp in
                                                       report["benchmark_splits"].items()) + ".", ""]
    for run in report["runs"]:
        bench = report["benchmarks"]
        has_sel = any(r["select_score"] is not None for r in run["checkpoints"])
        head = ["checkpoint", *bench, "macro avg"] + ([f"select avg@{k}"] if has_sel else [])
        lines += [f"## {run['run']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in run["checkpoints"]:
            name = r["checkpoint"] + (f" (step {r['step']})" if r["checkpoint"] == "best" and r["step"] is not None
                                      else "")
            tags = [t for t, who in (("best", run["best"]), ("last", run["last"])) if who == r["checkpoint"]]
            name = f"**{name}** ({', '.join(tags)})" if tags else name
            cells = [f"{_pct(r['benchmarks'][b]['avg@k'])} / {_pct(r['benchmarks'][b][f'pass@{j}'])}" for b in bench]
            cells.append(f"{_pct(r['macro']['avg@k'])} / {_pct(r['macro'][f'pass@{j}'])}")
            if has_sel:
                cells.append(_pct(r["select_score"]))
            lines.append("| " + " | ".join([name, *cells]) + " |")
        by_name = {r["checkpoint"]: r for r in run["checkpoints"]}
        lines.append("")
        for tag in ("best", "last"):
            who = run[tag]
            if who is None:
                lines.append(f"- **{tag}**: none" + (" (no step_* checkpoint)" if tag == "last" else ""))
                continue
            m = by_name[who]["macro"]
            note = f" ({run['last_note']})" if tag == "last" and run.get("last_note") else ""
            lines.append(f"- **{tag}**: {who}{note}: macro avg@{k} {_pct(m['avg@k'])}, pass@{j} "
                         f"{_pct(m[f'pass@{j}'])}")
        lines += [f"- selection: {run['selected_on']}", ""]
    return "\n".join(lines)


def summary_line(report: dict[str, Any], out: Path) -> str:
    runs = []
    for run in report["runs"]:
        by_name = {r["checkpoint"]: r for r in run["checkpoints"]}
        entry = {"run": run["run"], "selection": run["selection"]}
        for tag in ("best", "last"):
            entry[tag] = run[tag]
            entry[f"{tag}_macro_avg@k"] = by_name[run[tag]]["macro"]["avg@k"] if run[tag] else None
        if run.get("last_note"):
            entry["last_note"] = run["last_note"]
        runs.append(entry)
    return json.dumps({"k": report["settings"]["k"], "runs": runs, "output": str(out)})
