"""The learning-rate sweep of the reproduction harness as one table: at each learning rate, each method's best
validation accuracy, the test accuracy of that checkpoint, and the rollouts ratio to reach the best of GRPO and
of GRPO-(K+1) *at the same learning rate* (baseline rollouts ÷ run rollouts; None = never reached).

    python benchmarks/reproduce.py --grid lr --seeds 0 1 threads=1   # the runs (the 1× runs come from --grid main)
    python benchmarks/lr_sweep_table.py --seeds 0 1

Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sfpo.compare import match_ratios  # noqa: E402
from sfpo.metrics import read_metrics  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduce import CONFIG, LR_FACTORS, LR_METHODS, lr_run_name  # noqa: E402


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "reproduce"), help="the harness's run folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    from sfpo.config import load_config

    base = load_config(CONFIG).optim.lr
    out = Path(args.out)
    rows = []
    for factor in sorted((1.0, *LR_FACTORS)):
        lr = base * factor
        for m in LR_METHODS:
            row = {"lr": lr, "method": m, "best_val": [], "test_of_best": [], "vs_grpo": [], "vs_grpo_passes": []}
            for seed in args.seeds:
                run = out / lr_run_name(m, lr, base) / f"seed{seed}"
                if not (run / "summary.json").exists():
                    continue
                summary = json.loads((run / "summary.json").read_text())
                row["best_val"].append(round(summary["best_accuracy"], 3))
                row["test_of_best"].append(round(summary.get("test/best_accuracy", float("nan")), 3))
                records = read_metrics(run / "metrics.jsonl")
                for baseline, key in (("grpo", "vs_grpo"), ("grpo_4passes", "vs_grpo_passes")):
                    b = out / lr_run_name(baseline, lr, base) / f"seed{seed}"
                    if (b / "summary.json").exists():
                        r = match_ratios(read_metrics(b / "metrics.jsonl"), records)["rollouts_ratio"]
                        row[key].append(round(r, 2) if r else None)
            rows.append(row)
    print(f"seeds {args.seeds}; lists are per seed, medians first; ratios compare with the baseline at the same lr")
    print("| lr | method | best val | test of best | rollouts ratio vs GRPO | vs GRPO-(K+1) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{_median(r[k])} {r[k]}" for k in ("best_val", "test_of_best", "vs_grpo", "vs_grpo_passes")]
        print(f"| {r['lr']:.0e} | {r['method']} | " + " | ".join(cells) + " |")
    print(json.dumps({"seeds": args.seeds, "rows": rows}))


if __name__ == "__main__":
    main()
