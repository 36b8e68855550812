"""The record `sfpo demo` reads its one seed against: the demo itself, with exactly its settings, on several seeds.

    python benchmarks/demo_record.py                          # seeds 0 1 2, ≈30 min on 2 idle cores
    python benchmarks/demo_record.py --seeds 0 --out /tmp/rec.json steps=2 eval.num_prompts=8   # a smoke run

Writes docs/reproduction/demo_record.json (shipped in the wheel; the demo compares only while its settings equal the
record's: change configs/demo.yaml and the record must be made again). Overrides make a record of other settings,
which the default demo then refuses to compare with. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sfpo.demo import make_record, run_demo  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "docs" / "reproduction" / "demo_record.json"))
    p.add_argument("--work-dir", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", help="config overrides for every run (a record of other settings)")
    args = p.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sfpo-demo-record-"))
    results = [run_demo(str(work / f"seed{s}"), overrides=[f"seed={s}", "log.progress=false", *args.overrides])
               for s in args.seeds]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"command": "python benchmarks/demo_record.py " + " ".join(sys.argv[1:]), "commit": commit,
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "cores_shared": {str(r["seed"]): r["cores_shared"] for r in results},
            "elapsed_s": round(sum(r["total_s"] for r in results), 1)}
    record = make_record(results, meta)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print("| seed | best GRPO | best GRPO-4 | best SFPO | SFPO÷GRPO rollouts | SFPO÷GRPO-4 rollouts |")
    print("|---|---|---|---|---|---|")
    fmt = lambda v: "not reached" if v is None else f"{v:.2f}"  # noqa: E731
    for seed, run in record["runs"].items():
        b = run["best_acc"]
        print(f"| {seed} | {b['grpo']:.3f} | {b['grpo_4passes']:.3f} | {b['sfpo_noswitch']:.3f} | "
              f"{fmt(run['sfpo_vs_grpo']['rollouts_ratio'])} | {fmt(run['sfpo_vs_grpo_4passes']['rollouts_ratio'])} |")
    print(json.dumps({"out": args.out, "seeds": args.seeds, **meta}))


if __name__ == "__main__":
    main()
