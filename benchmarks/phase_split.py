"""Where a step's time goes on this machine: rollout (generation), old log-probs and one update pass, for GRPO
steps from the shipped arithmetic policy, with the engine decoding the whole batch at once or in chunks of
``max_batch_sequences`` sequences (``rollout.engine_kwargs``).

    python benchmarks/phase_split.py                 # 6 steps per setting, one thread, a fresh process each
    python benchmarks/phase_split.py --steps 4 --chunks 0 8

On a GPU, decoding is bound by memory traffic and per-token latency, so generation takes most of a GRPO step
(the paper's setting); on a CPU a batched decode costs about what a forward over the same tokens costs, and
longer responses make every phase longer alike. Decoding in small chunks makes generation latency-bound here
too: this measures how small a chunk puts the rollout at a GPU-like share of a step. The share of a step with
K+1 update passes (GRPO-4, SFPO) and its cost against a GRPO step (the paper reports ≈1.37× at K=3 on GPUs)
are computed from the same phase times. Medians over the steps after the first;
each setting's CPU time beside its wall time (≈1 when the core was its own). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sfpo.reproduce.harness import run_timed  # noqa: E402
from sfpo.testbed import warm_start  # noqa: E402


def measure(chunk: int, steps: int, passes: int) -> dict:
    policy = warm_start("arithmetic", progress=False)  # the shipped policy: nothing is trained here
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "sfpo.cli", "train", str(ROOT / "configs" / "reproduce.yaml"),
               "algorithm.name=grpo", f"model.path={policy}", f"steps={steps}", "eval.every=0",
               "eval.test_num_prompts=0", "threads=1", f"output_dir={out}", "log.progress=false",
               "log.tensorboard=false", "log.plot=false", "checkpoint_every=0"]
        if chunk:
            cmd.append(f"rollout.engine_kwargs={{max_batch_sequences: {chunk}}}")
        log = Path(out) / "stderr.log"
        code, wall, cpu = run_timed(cmd, {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}, log)
        if code != 0:
            raise SystemExit(f"chunk {chunk}: training failed:\n{log.read_text()[-3000:]}")
        rows = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("time/step") is not None][1:]  # the first step warms up
    med = {k: statistics.median(r[k] for r in rows) for k in ("time/rollout", "time/old_logprobs", "time/update",
                                                               "completion_length")}
    one = med["time/rollout"] + med["time/old_logprobs"] + med["time/update"]
    many = med["time/rollout"] + med["time/old_logprobs"] + passes * med["time/update"]
    return {"chunk": chunk, **{k.removeprefix("time/"): v for k, v in med.items()},
            "rollout_share_grpo": med["time/rollout"] / one, f"rollout_share_{passes}_passes": med["time/rollout"] / many,
            "step_cost_ratio": many / one,
            "cpu_per_wall": cpu / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 32, 16, 8], help="0 = the whole batch at once")
    p.add_argument("--passes", type=int, default=4, help="update passes of GRPO-(K+1) / SFPO (K=3)")
    args = p.parse_args()
    rows = [measure(c, args.steps, args.passes) for c in args.chunks]
    print(f"GRPO steps from the shipped arithmetic policy, 32 prompts × 8, ≤16 tokens; medians of {args.steps - 1} "
          "steps (s)")
    print(f"| decode chunk | rollout | old log-probs | update (1 pass) | rollout share, GRPO | rollout share, "
          f"{args.passes} passes | {args.passes}-pass step ÷ GRPO step | response tokens | CPU/wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['chunk'] or 'whole batch'} | {r['rollout']:.2f} | {r['old_logprobs']:.2f} | {r['update']:.2f} | "
              f"{r['rollout_share_grpo']:.0%} | {r[f'rollout_share_{args.passes}_passes']:.0%} | "
              f"{r['step_cost_ratio']:.2f}× | "
              f"{r['completion_length']:.1f} | {r['cpu_per_wall']:.2f} |")
    print(json.dumps({"steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
