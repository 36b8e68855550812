"""``sfpo demo``: GRPO and SFPO on the CPU testbed, same seed and rollout budget, compared in a table and a plot.

It warm-starts (or loads the cached) testbed policy, trains both methods from it, prints best validation
accuracy, rollouts and wall-clock to reach GRPO's best and per-step time, writes a PNG, and ends with one JSON
line. The settings are configs/demo.yaml; ``--quick`` shrinks them for a smoke run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from sfpo.compare import best_point, match_ratios, step_time
from sfpo.config import load_config
from sfpo.metrics import read_metrics
from sfpo.plots import plot_compare

__all__ = ["run_demo", "DEMO_CONFIG"]

logger = logging.getLogger(__name__)

# configs/ sits at the root of the clone (src/sfpo/demo.py → ../../configs); the README installs editable.
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
QUICK = ["steps=16", "eval.every=4", "eval.num_prompts=128"]  # same warm-start: the cache is shared


def run_demo(output_dir: str = "runs/demo", quick: bool = False, overrides: list[str] | None = None) -> dict:
    from sfpo.trainer import Trainer

    t_start = time.perf_counter()
    out = Path(output_dir)
    methods = {"grpo": ["algorithm.name=grpo"], "sfpo": ["algorithm.name=sfpo", "algorithm.inner_steps=3",
                                                          "algorithm.alpha=0.8"]}
    records = {}
    for name, method in methods.items():
        run_dir = out / name
        extra = (QUICK if quick else []) + method + (overrides or []) + [f"output_dir={run_dir}"]
        cfg = load_config(DEMO_CONFIG, extra)
        logger.info("demo: training %s for %d steps (%s)", name, cfg.steps, run_dir)
        Trainer(cfg).train()
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
    }
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
    return "\n".join(lines + ["", ratio, smooth])


def summary_json(res: dict) -> str:
    keys = ("grpo_best_acc", "sfpo_best_acc", "rollouts_ratio", "wallclock_ratio", "grpo_step_s", "sfpo_step_s",
            "sfpo_active_step_s", "rollouts_ratio_smoothed", "wallclock_ratio_smoothed", "start_acc", "total_s",
            "quick")
    return json.dumps({k: res[k] for k in keys})
