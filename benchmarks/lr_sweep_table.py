"""The learning-rate sweep of the reproduction harness as one table per task, from the run records: at each
learning rate, each method's best validation accuracy, the test accuracy of that checkpoint, and the rollouts
ratio to reach the best of GRPO and of GRPO-(K+1) *at the same learning rate*, with its bootstrap interval;
then each method's best learning rate.

    sfpo reproduce --grid issue12 --workers 2   # the runs (records in docs/reproduction/records/)
    python benchmarks/lr_sweep_table.py

Prints markdown tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from sfpo.reproduce.grid import RECORDS, load_records  # noqa: E402
from sfpo.reproduce.report import analyse  # noqa: E402


def _ratio(c: dict | None) -> str:
    if not c:
        return "—"
    e = c["rollouts_ratio"]
    ci = "no interval" if e["ci"] is None else "[" + ", ".join("never" if v is None else f"{v:.2f}" for v in e["ci"]) + "]"
    return f"{'never' if e['point'] is None else format(e['point'], '.2f')} {ci} ({e['reached']}/{e['n']})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", default=str(RECORDS), help="the harness's run records")
    args = p.parse_args()
    analysis = analyse(load_records(Path(args.records)))
    for task, rows in analysis["sweep"].items():
        print(f"\n{task}: medians over runs; ratios against the baseline at the same lr, 95% bootstrap interval")
        print("| method @ lr | runs | best val | test of best | rollouts ratio vs GRPO | vs GRPO-(K+1) |")
        print("|---|---|---|---|---|---|")
        for name, row in rows.items():
            print(f"| {name} | {row['n']} | {row['best_val']:.3f} | "
                  f"{'—' if row['test_of_best'] is None else format(row['test_of_best'], '.3f')} | "
                  f"{_ratio(row.get('vs_grpo'))} | {_ratio(row.get('vs_grpo_4passes'))} |")
        if task in analysis["best_lr"]:
            print("best lr: " + ", ".join(f"{m} {lr:.0e}" for m, lr in analysis["best_lr"][task].items()))
    print(json.dumps({"best_lr": analysis["best_lr"],
                      "sweep": {t: {n: {"n": r["n"], "best_val": r["best_val"], "test_of_best": r["test_of_best"]}
                                    for n, r in rows.items()} for t, rows in analysis["sweep"].items()}}))


if __name__ == "__main__":
    main()
