"""``sfpo demo``: GRPO and SFPO on the CPU testbed, same seed and rollout budget, compared in a table and a plot.

It starts both methods from the testbed policy that ships with the package (the same bits on every machine),
prints best validation accuracy, rollouts and wall-clock to reach GRPO's best and per-step time, says whether
this one seed's difference lies within the published record's per-seed spread, warns when other processes
shared the cores (wall-clock ratios are then unreliable), writes a PNG, and ends with one JSON line. The
settings are configs/demo.yaml; ``--quick`` shrinks them for a smoke run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from sfpo.compare import best_point, match_ratios, step_time
from sfpo.config import load_config
from sfpo.machine import core_sharing, cpu_snapshot
from sfpo.metrics import read_metrics
from sfpo.plots import plot_compare

__all__ = ["run_demo", "DEMO_CONFIG", "DEMO_RECORD", "record_context", "core_sharing"]

logger = logging.getLogger(__name__)

# configs/ sits at the root of the clone (src/sfpo/demo.py → ../../configs); the README installs editable.
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
QUICK = ["steps=16", "eval.every=4", "eval.num_prompts=128"]  # same warm-start: the cache is shared
# The published run of the demo's two methods from the shipped policy (lr 1e-4, 3 seeds, 120 steps).
DEMO_RECORD = Path(__file__).resolve().parents[2] / "docs" / "reproduction" / "record_2026-11-30.json"


def record_context(record_path: Path, acc_diff: float | None, rollouts_ratio: float | None) -> dict | None:
    """This run's SFPO − GRPO best validation accuracy and rollouts ratio against the published record's
    per-seed values: the record's range, and whether this single seed falls inside it. None without a record."""
    if not record_path.exists():
        return None
    rec = json.loads(record_path.read_text())
    table = rec["table"]
    seeds = [str(s) for s in rec["seeds"]]
    diffs = [table["sfpo"]["best_val"][s] - table["grpo"]["best_val"][s] for s in seeds]
    ratios = [v for v in rec["rollouts_ratio_vs_grpo"]["per_seed"].values() if v is not None]

    def within(v, xs):
        return None if v is None or not xs else min(xs) <= v <= max(xs)

    return {"record": str(record_path.name), "seeds": len(seeds),
            "acc_diff": acc_diff, "record_acc_diff": [min(diffs), max(diffs)],
            "acc_diff_within": within(acc_diff, diffs),
            "rollouts_ratio": rollouts_ratio, "record_rollouts_ratio": [min(ratios), max(ratios)] if ratios else None,
            "rollouts_ratio_within": within(rollouts_ratio, ratios)}


def _start_policy(cfg) -> dict:
    """Which policy both methods start from: the shipped one (sha256 checked by the tests) or another."""
    from sfpo.testbed import SHIPPED_DIR, file_sha256, warm_start

    if cfg.model.path is not None:
        return {"path": cfg.model.path, "shipped": False, "sha256": None}
    kwargs = {} if cfg.model.warmup_steps is None else {"steps": cfg.model.warmup_steps}
    path = warm_start(cfg.task.name, cfg.task.kwargs, size=cfg.model.testbed_size, seed=cfg.model.warmup_seed,
                      **kwargs)
    return {"path": str(path), "shipped": path.parent == SHIPPED_DIR,
            "sha256": file_sha256(path / "model.safetensors")}


def run_demo(output_dir: str = "runs/demo", quick: bool = False, overrides: list[str] | None = None) -> dict:
    from sfpo.trainer import Trainer

    t_start = time.perf_counter()
    out = Path(output_dir)
    methods = {"grpo": ["algorithm.name=grpo"], "sfpo": ["algorithm.name=sfpo", "algorithm.inner_steps=3",
                                                          "algorithm.alpha=0.8"]}
    records, sharing, policy = {}, {}, None
    for name, method in methods.items():
        run_dir = out / name
        extra = (QUICK if quick else []) + method + (overrides or []) + [f"output_dir={run_dir}"]
        cfg = load_config(DEMO_CONFIG, extra)
        policy = policy or _start_policy(cfg)
        logger.info("demo: training %s for %d steps (%s)", name, cfg.steps, run_dir)
        before = cpu_snapshot()
        Trainer(cfg).train()
        sharing[name] = core_sharing(before, cpu_snapshot())
        records[name] = read_metrics(run_dir)

    grpo, sfpo = records["grpo"], records["sfpo"]
    ratios = match_ratios(grpo, sfpo)
    smoothed = match_ratios(grpo, sfpo, smooth=3)
    active = [r for r in sfpo if r.get("sfpo/active") == 1.0]
    g_best, s_best = best_point(grpo), best_point(sfpo)
    start_acc = next(r["val/accuracy"] for r in grpo if r.get("val/accuracy") is not None)
    plot = plot_compare({"GRPO": [out / "grpo"], "SFPO (K=3, α=0.8)": [out / "sfpo"]}, out / "demo.png",
                        reference=g_best["acc"])
    result = {
        "start_acc": start_acc, "grpo_best_acc": g_best["acc"], "sfpo_best_acc": s_best["acc"],
        "grpo_best_step": g_best["step"], "sfpo_best_step": s_best["step"],
        "grpo_rollouts_to_best": g_best["rollouts"], "sfpo_rollouts_to_grpo_best": ratios["run_rollouts"],
        "grpo_time_to_best": g_best["time"], "sfpo_time_to_grpo_best": ratios["run_time"],
        "rollouts_ratio": ratios["rollouts_ratio"], "wallclock_ratio": ratios["wallclock_ratio"],
        "rollouts_ratio_smoothed": smoothed["rollouts_ratio"], "wallclock_ratio_smoothed": smoothed["wallclock_ratio"],
        "grpo_step_s": step_time(grpo), "sfpo_step_s": step_time(sfpo),
        "sfpo_active_step_s": step_time(active) if active else None, "sfpo_active_steps": len(active),
        "total_s": time.perf_counter() - t_start, "plot": str(plot), "logs": str(out), "quick": quick,
        "policy": policy, "sharing": sharing, "cores_shared": any(v["shared"] for v in sharing.values()),
    }
    acc_diff = s_best["acc"] - g_best["acc"]
    result["record"] = None if quick else record_context(DEMO_RECORD, acc_diff, ratios["rollouts_ratio"])
    if result["cores_shared"]:
        logger.warning("demo: other processes kept %s cores busy on average while it ran: step times and "
                       "wall-clock ratios are unreliable (rollout counts are not affected)",
                       "/".join(f"{v['other_cores']:.1f}" for v in sharing.values()))
    return result


def format_table(res: dict) -> str:
    def f(v, fmt="{:.3f}"):
        return "not reached" if v is None else fmt.format(v)

    rows = [
        ("", "GRPO", "SFPO (K=3, α=0.8)"),
        ("validation accuracy at start", f(res["start_acc"]), f(res["start_acc"])),
        ("best validation accuracy", f(res["grpo_best_acc"]), f(res["sfpo_best_acc"])),
        ("step of best", str(res["grpo_best_step"]), str(res["sfpo_best_step"])),
        ("rollouts to reach GRPO's best", f(res["grpo_rollouts_to_best"], "{:.0f}"),
         f(res["sfpo_rollouts_to_grpo_best"], "{:.0f}")),
        ("train wall-clock to reach GRPO's best (s)", f(res["grpo_time_to_best"], "{:.1f}"),
         f(res["sfpo_time_to_grpo_best"], "{:.1f}")),
        ("median step time (s)", f(res["grpo_step_s"], "{:.2f}"), f(res["sfpo_step_s"], "{:.2f}")),
        (f"  … while SFPO was on ({res['sfpo_active_steps']} steps)", "", f(res["sfpo_active_step_s"], "{:.2f}")),
    ]
    w0 = max(len(r[0]) for r in rows)
    lines = [f"| {r[0]:<{w0}} | {r[1]:>12} | {r[2]:>18} |" for r in rows]
    lines.insert(1, f"|{'-' * (w0 + 2)}|{'-' * 14}|{'-' * 20}|")
    ratio = (f"to reach GRPO's best, GRPO ÷ SFPO: rollouts {f(res['rollouts_ratio'], '{:.2f}')}, "
             f"wall-clock {f(res['wallclock_ratio'], '{:.2f}')} (above 1 = SFPO got there cheaper); "
             f"SFPO/GRPO step time {res['sfpo_step_s'] / res['grpo_step_s']:.2f}")
    smooth = (f"with validation accuracy averaged over 3 evaluations (less noise): rollouts "
              f"{f(res['rollouts_ratio_smoothed'], '{:.2f}')}, wall-clock {f(res['wallclock_ratio_smoothed'], '{:.2f}')}")
    pol = res["policy"] or {}
    start = (f"both started from the shipped testbed policy (sha256 {pol['sha256'][:16]}…): the same bits on "
             f"every machine" if pol.get("shipped") else
             f"both started from {pol.get('path')} (not the shipped policy: results will not match the record)")
    out = lines + ["", ratio, smooth, "", start]
    ctx = res.get("record")
    if ctx:
        def verdict(w):
            return "within" if w else "OUTSIDE" if w is not None else "not comparable with"

        out.append(
            f"one seed, so read it against the published record ({ctx['record']}: {ctx['seeds']} seeds, 120 steps, "
            f"the same methods and policy): SFPO − GRPO best validation {f(ctx['acc_diff'], '{:+.3f}')} is "
            f"{verdict(ctx['acc_diff_within'])} the record's per-seed range "
            f"[{ctx['record_acc_diff'][0]:+.3f}, {ctx['record_acc_diff'][1]:+.3f}]; the rollouts ratio "
            f"{f(ctx['rollouts_ratio'], '{:.2f}')} is {verdict(ctx['rollouts_ratio_within'])} its range "
            f"[{ctx['record_rollouts_ratio'][0]:.2f}, {ctx['record_rollouts_ratio'][1]:.2f}]. Differences of this "
            f"size need several policies × seeds to tell from noise: docs/reproduction.md has the intervals.")
    if res.get("cores_shared"):
        out.append("WARNING: other processes shared the cores during this run (on average "
                   + ", ".join(f"{k} {v['other_cores']:.1f}" for k, v in res["sharing"].items())
                   + " cores busy besides the demo): step times and wall-clock ratios are unreliable; rollout "
                     "counts are not affected.")
    return "\n".join(out)


def summary_json(res: dict) -> str:
    keys = ("grpo_best_acc", "sfpo_best_acc", "rollouts_ratio", "wallclock_ratio", "grpo_step_s", "sfpo_step_s",
            "sfpo_active_step_s", "rollouts_ratio_smoothed", "wallclock_ratio_smoothed", "start_acc", "total_s",
            "quick", "cores_shared", "record")
    out = {k: res[k] for k in keys}
    out["policy_sha256"] = (res.get("policy") or {}).get("sha256")
    out["other_cores"] = {k: v["other_cores"] for k, v in res["sharing"].items()}
    return json.dumps(out)
