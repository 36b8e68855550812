"""``sfpo demo``: GRPO, GRPO with K+1 passes (the control the paper leaves out) and SFPO on the CPU testbed, from
the shipped policy with the same seed and rollout budget, side by side in a table and a plot.

The methods and settings are the reproduction grid's (``grpo``, ``grpo_4passes``, ``sfpo_noswitch`` at the lr it
chose), shortened to 60 steps (configs/demo.yaml). The demo prints best validation accuracy, rollouts and
wall-clock to reach GRPO's and GRPO-4's best and step times; reads this one seed against a record made with exactly
its settings (``benchmarks/demo_record.py``), never against another setup; quotes what the grid concluded from
``results.json``; warns when other processes shared the cores; ends with one JSON line. ``--quick`` is a smoke run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from sfpo.compare import best_point, first_reach, match_ratios, step_time
from sfpo.config import load_config, to_dict
from sfpo.machine import core_sharing, cpu_snapshot
from sfpo.metrics import read_metrics
from sfpo.reproduce.grid import METHODS as GRID_METHODS
from sfpo.shipped import CONFIGS_DIR, DEMO_RECORD, RESULTS

__all__ = ["run_demo", "format_table", "summary_json", "demo_settings", "make_record", "record_context", "core_sharing",
           "DEMO_CONFIG", "DEMO_RECORD", "METHODS"]

logger = logging.getLogger(__name__)

DEMO_CONFIG = CONFIGS_DIR / "demo.yaml"
# the grid's methods, by its names and with its overrides: SFPO is the one with its entropy switch off
METHODS = {m: GRID_METHODS[m] for m in ("grpo", "grpo_4passes", "sfpo_noswitch")}
LABELS = {"grpo": "GRPO", "grpo_4passes": "GRPO-4", "sfpo_noswitch": "SFPO"}
QUICK = ["steps=8", "eval.every=4", "eval.num_prompts=64"]
# settings that do not change what a run computes, left out when a run is matched with the record
NOT_SETTINGS = ("seed", "output_dir", "log", "resume")


def demo_settings(cfgs: dict[str, Any], policy_sha256: str | None) -> dict[str, Any]:
    """Everything that decides what the demo's runs compute, flattened (``optim.lr`` → 3e-5), per method, with
    the starting policy's sha256: two demos are like for like exactly when these are equal (seed aside)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if not prefix and k in NOT_SETTINGS:
                continue
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    settings = {"policy_sha256": policy_sha256, "methods": {m: flat(to_dict(c)) for m, c in cfgs.items()}}
    return json.loads(json.dumps(settings))  # as a record stores them (tuples become lists)


def _settings_diff(a: dict, b: dict) -> list[str]:
    keys = [] if a["policy_sha256"] == b["policy_sha256"] else ["starting policy"]
    for m in sorted(set(a["methods"]) | set(b["methods"])):
        x, y = a["methods"].get(m), b["methods"].get(m)
        if x is None or y is None:
            keys.append(f"method {m}")
            continue
        keys += [f"{m}: {k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    return keys


def _start_policy(cfg) -> dict:
    """Which policy every method starts from: the shipped one (sha256 checked by the tests) or another."""
    from sfpo.testbed import SHIPPED_DIR, file_sha256, warm_start

    if cfg.model.path is not None:
        return {"path": cfg.model.path, "shipped": False, "sha256": None}
    kwargs = {} if cfg.model.warmup_steps is None else {"steps": cfg.model.warmup_steps}
    path = warm_start(cfg.task.name, cfg.task.kwargs, size=cfg.model.testbed_size, seed=cfg.model.warmup_seed,
                      **kwargs)
    return {"path": str(path), "shipped": path.parent == SHIPPED_DIR,
            "sha256": file_sha256(path / "model.safetensors")}


def _reach(records: list[dict], target: float) -> dict:
    hit = first_reach(records, target)
    return {"rollouts": hit["rollouts"] if hit else None, "time": hit["time"] if hit else None}


def compare_runs(records: dict[str, list[dict]]) -> dict[str, Any]:
    """Per method: best validation, when, step time, and rollouts/wall-clock to reach GRPO's and GRPO-4's best;
    SFPO against both as ratios (baseline cost ÷ SFPO cost, the paper's convention)."""
    best = {m: best_point(r) for m, r in records.items()}
    out: dict[str, Any] = {"start_acc": next(r["val/accuracy"] for r in records["grpo"]
                                             if r.get("val/accuracy") is not None), "methods": {}}
    for m, recs in records.items():
        out["methods"][m] = {"best_acc": best[m]["acc"], "best_step": best[m]["step"], "step_s": step_time(recs),
                             "to_grpo_best": _reach(recs, best["grpo"]["acc"]),
                             "to_grpo_4passes_best": _reach(recs, best["grpo_4passes"]["acc"])}
    sfpo = records["sfpo_noswitch"]
    for base in ("grpo", "grpo_4passes"):
        r = match_ratios(records[base], sfpo)
        out[f"sfpo_vs_{base}"] = {"rollouts_ratio": r["rollouts_ratio"], "wallclock_ratio": r["wallclock_ratio"],
                                  "nothing_to_reach": bool(r.get("nothing_to_reach")),
                                  "best_acc_diff": best["sfpo_noswitch"]["acc"] - best[base]["acc"]}
    return out


def run_demo(output_dir: str = "runs/demo", quick: bool = False, overrides: list[str] | None = None) -> dict:
    from sfpo.plots import plot_compare
    from sfpo.trainer import Trainer

    t_start = time.perf_counter()
    out = Path(output_dir)
    cfgs = {m: load_config(DEMO_CONFIG, (QUICK if quick else []) + extra + (overrides or [])
                           + [f"output_dir={out / m}"]) for m, extra in METHODS.items()}
    policy = _start_policy(cfgs["grpo"])
    records, sharing = {}, {}
    for m, cfg in cfgs.items():
        logger.info("demo: training %s for %d steps (%s)", m, cfg.steps, cfg.output_dir)
        before = cpu_snapshot()
        Trainer(cfg).train()
        sharing[m] = core_sharing(before, cpu_snapshot())
        records[m] = read_metrics(cfg.output_dir)

    result = compare_runs(records)
    grpo_best = result["methods"]["grpo"]["best_acc"]
    plot = plot_compare({f"{LABELS[m]} ({m})": [out / m] for m in METHODS}, out / "demo.png", reference=grpo_best)
    settings = demo_settings(cfgs, policy["sha256"])
    result.update({
        "seed": cfgs["grpo"].seed, "steps": cfgs["grpo"].steps, "lr": cfgs["grpo"].optim.lr,
        "val_prompts": cfgs["grpo"].eval.num_prompts,
        "evals": sum(1 for r in records["grpo"] if r.get("val/accuracy") is not None), "total_s": time.perf_counter() - t_start, "plot": str(plot),
        "logs": str(out), "quick": quick, "policy": policy, "sharing": sharing,
        "cores_shared": any(v["shared"] for v in sharing.values()), "settings": settings})
    result["record"] = record_context(DEMO_RECORD, result)
    result["grid"] = _grid_finding()
    if result["cores_shared"]:
        logger.warning("demo: other processes kept %s cores busy on average while it ran: step times and "
                       "wall-clock ratios are unreliable (rollout counts are not affected)",
                       "/".join(f"{v['other_cores']:.1f}" for v in sharing.values()))
    return result


def _grid_finding() -> str | None:
    from sfpo.findings import control_finding

    return control_finding() if RESULTS.exists() else None


def record_summary(result: dict) -> dict:
    """What a record keeps of one demo run: SFPO − each baseline's best validation and the rollouts ratios."""
    return {"best_acc": {m: v["best_acc"] for m, v in result["methods"].items()},
            **{k: result[k] for k in ("sfpo_vs_grpo", "sfpo_vs_grpo_4passes")}}


def make_record(results: list[dict], meta: dict | None = None) -> dict:
    """A record (``benchmarks/demo_record.py``) from demo results that differ in their seed only."""
    settings = results[0]["settings"]
    for r in results[1:]:
        if _settings_diff(settings, r["settings"]):
            raise ValueError(f"demo runs with different settings: {_settings_diff(settings, r['settings'])}")
    return {"settings": settings, "meta": meta or {}, "runs": {str(r["seed"]): record_summary(r) for r in results}}


def record_context(record_path: Path, result: dict) -> dict:
    """This run against a record made with exactly its settings (seed aside): the record's per-seed range of each
    SFPO − baseline difference and rollouts ratio, and whether this one seed lies inside. A record made with other
    settings is not compared with at all (``status``: ``missing`` / ``other settings``, with the differences)."""
    if not Path(record_path).exists():
        return {"status": "missing", "record": str(record_path)}
    rec = json.loads(Path(record_path).read_text())
    differs = _settings_diff(rec["settings"], result["settings"])
    if differs:
        return {"status": "other settings", "record": Path(record_path).name, "differs": differs}
    runs = rec["runs"]
    ctx: dict[str, Any] = {"status": "compared", "record": Path(record_path).name, "seeds": sorted(runs, key=int)}
    for base in ("grpo", "grpo_4passes"):
        key = f"sfpo_vs_{base}"
        for measure in ("best_acc_diff", "rollouts_ratio"):
            xs = [r[key][measure] for r in runs.values() if r[key][measure] is not None]
            v = result[key][measure]
            ctx[f"{key}.{measure}"] = {"value": v, "range": [min(xs), max(xs)] if xs else None,
                                       "within": None if v is None or not xs else min(xs) <= v <= max(xs)}
    same = runs.get(str(result["seed"]))
    ctx["same_seed_in_record"] = same is not None
    ctx["same_seed_matches"] = same is not None and same["best_acc"] == record_summary(result)["best_acc"]
    return ctx


def _f(v, fmt="{:.3f}"):
    return "not reached" if v is None else fmt.format(v)


def format_table(res: dict) -> str:
    ms = res["methods"]
    cols = list(METHODS)
    rows = [("", *(f"{LABELS[m]} ({m})" for m in cols)),
            ("validation accuracy at start", *(_f(res["start_acc"]) for _ in cols)),
            ("best validation accuracy", *(_f(ms[m]["best_acc"]) for m in cols)),
            ("step of best", *(str(ms[m]["best_step"]) for m in cols))]
    for base in ("grpo", "grpo_4passes"):
        rows.append((f"rollouts to reach {LABELS[base]}'s best", *(_f(ms[m][f"to_{base}_best"]["rollouts"], "{:.0f}")
                                                                   for m in cols)))
        rows.append((f"train wall-clock to reach {LABELS[base]}'s best (s)",
                     *(_f(ms[m][f"to_{base}_best"]["time"], "{:.1f}") for m in cols)))
    rows.append(("median step time (s)", *(_f(ms[m]["step_s"], "{:.2f}") for m in cols)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    noise = 1 / (2 * math.sqrt(res["val_prompts"]))  # binomial sd at p = 0.5, an upper bound
    out = lines + [""]
    for base in ("grpo", "grpo_4passes"):
        c = res[f"sfpo_vs_{base}"]
        if c.get("nothing_to_reach"):
            out.append(f"SFPO vs {LABELS[base]}: best validation {c['best_acc_diff']:+.3f}; {LABELS[base]} never "
                       f"improved on its start, so there is no cost to reach its best to compare")
            continue
        out.append(f"SFPO vs {LABELS[base]}: best validation {c['best_acc_diff']:+.3f}; to reach its best, "
                   f"{LABELS[base]} ÷ SFPO rollouts {_f(c['rollouts_ratio'], '{:.2f}')}, wall-clock "
                   f"{_f(c['wallclock_ratio'], '{:.2f}')} (above 1: SFPO got there cheaper)")
    out.append(f"One seed, {res['steps']} steps, {res['val_prompts']} validation prompts: a best validation "
               f"accuracy is noisy by up to ±{noise:.3f} (one sd), and the best of {res['evals']} noisy evaluations is "
               f"biased upward; differences of that size need several policies × seeds.")
    pol = res["policy"] or {}
    out.append(f"All three started from the shipped testbed policy (sha256 {pol['sha256'][:16]}…)"
               if pol.get("shipped") else
               f"All three started from {pol.get('path')} (not the shipped policy: not comparable with a record)")
    out += ["", _record_lines(res.get("record") or {})]
    if res.get("grid"):
        out += ["", res["grid"] + " (docs/reproduction.md)"]
    if res.get("cores_shared"):
        out.append("WARNING: other processes shared the cores during this run (on average "
                   + ", ".join(f"{k} {v['other_cores']:.1f}" for k, v in res["sharing"].items())
                   + " cores busy besides the demo): step times and wall-clock ratios are unreliable; rollout "
                     "counts are not affected.")
    return "\n".join(out)


def _record_lines(ctx: dict) -> str:
    status = ctx.get("status")
    if status == "missing":
        return ("No record made with the demo's settings ships with this version (make one: python "
                "benchmarks/demo_record.py), so this seed is not read against other seeds.")
    if status == "other settings":
        shown = ", ".join(ctx["differs"][:4]) + (" …" if len(ctx["differs"]) > 4 else "")
        return f"Not compared with the record {ctx['record']}: it was made with other settings ({shown})."
    if status != "compared":
        return ""

    def say(key, what, fmt):
        e = ctx[key]
        if e["range"] is None:
            return f"{what} {_f(e['value'], fmt)} (the record has none)"
        verdict = "within" if e["within"] else "OUTSIDE" if e["within"] is not None else "not comparable with"
        lo, hi = (fmt.format(x) for x in e["range"])
        return f"{what} {_f(e['value'], fmt)} is {verdict} [{lo}, {hi}]"

    parts = [say(f"sfpo_vs_{b}.best_acc_diff", f"SFPO − {LABELS[b]} best validation", "{:+.3f}") for b in
             ("grpo", "grpo_4passes")]
    parts += [say(f"sfpo_vs_{b}.rollouts_ratio", f"rollouts ratio vs {LABELS[b]}", "{:.2f}") for b in
              ("grpo", "grpo_4passes")]
    seed = ("; this seed is in the record and " + ("gave the same best accuracies" if ctx["same_seed_matches"]
                                                  else "gave other best accuracies (another CPU's kernels?)")
            if ctx["same_seed_in_record"] else "")
    return (f"Against the record {ctx['record']} (seeds {', '.join(ctx['seeds'])}, exactly these settings), "
            "per-seed ranges: " + "; ".join(parts) + seed + ".")


def summary_json(res: dict) -> str:
    keys = ("start_acc", "methods", "sfpo_vs_grpo", "sfpo_vs_grpo_4passes", "seed", "steps", "lr", "total_s",
            "quick", "cores_shared")
    out = {k: res[k] for k in keys}
    out["record"] = (res.get("record") or {}).get("status")
    out["policy_sha256"] = (res.get("policy") or {}).get("sha256")
    out["other_cores"] = {k: v["other_cores"] for k, v in res["sharing"].items()}
    return json.dumps(out)
