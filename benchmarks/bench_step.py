"""Training-step time of the trainer on the CPU testbed: GRPO, GRPO with K+1 passes and SFPO (K=3, switch off so
every step is an SFPO step), stepped in turn so that machine noise hits all of them alike; medians by phase.

    python benchmarks/bench_step.py                       # 32 prompts × 8 samples, 16 new tokens, 20 steps each
    python benchmarks/bench_step.py --steps 40 rollout.num_prompts=64

Prints a table, then one JSON line (grpo_step_s, sfpo_step_s, sfpo_over_grpo, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from sfpo.config import load_config  # noqa: E402
from sfpo.trainer import Trainer  # noqa: E402

METHODS = {
    "grpo": ["algorithm.name=grpo"],
    "grpo_4passes": ["algorithm.name=grpo", "algorithm.passes=4"],
    "sfpo": ["algorithm.name=sfpo", "algorithm.inner_steps=3", "algorithm.alpha=0.8", "algorithm.switch=never"],
}
PHASES = ("time/step", "time/rollout", "time/reward", "time/old_logprobs", "time/update", "time/fast",
          "time/reposition", "time/slow")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2, help="steps per method not counted")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench_step_"))
    trainers = {}
    for name, ov in METHODS.items():
        cfg = load_config(ROOT / "configs" / "demo.yaml",
                          # threads=0: torch's default, as before configs/demo.yaml pinned the demo to one thread
                          ov + ["threads=0", "eval.every=0", "log.progress=false", "log.tensorboard=false",
                                "log.plot=false", "resume=false", f"output_dir={tmp / name}"] + args.overrides)
        trainers[name] = Trainer(cfg)
    times: dict[str, list[dict[str, float]]] = {n: [] for n in METHODS}
    for i in range(args.warmup + args.steps):
        for name, t in trainers.items():  # interleaved: one step of each method in turn
            m = t.train_step()
            t.step += 1
            if i >= args.warmup:
                times[name].append(m)
    med = {n: {k: statistics.median(r.get(k, 0.0) for r in rs) for k in PHASES} for n, rs in times.items()}
    cfg = trainers["grpo"].cfg
    n_params = sum(q.numel() for q in trainers["grpo"].model.parameters())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"testbed policy {n_params / 1e6:.2f}M params; {cfg.rollout.num_prompts} prompts × {cfg.rollout.group_size}"
          f" samples, ≤{cfg.rollout.max_new_tokens} new tokens; {args.steps} steps each (interleaved, medians); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, commit {commit}")
    print("| method | " + " | ".join(k.removeprefix("time/") for k in PHASES) + " |")
    print("|---|" + "---|" * len(PHASES))
    for n, row in med.items():
        print(f"| {n} | " + " | ".join(f"{row[k]:.3f}" for k in PHASES) + " |")
    g, s, g4 = med["grpo"]["time/step"], med["sfpo"]["time/step"], med["grpo_4passes"]["time/step"]
    print(json.dumps({"grpo_step_s": g, "grpo_4passes_step_s": g4, "sfpo_step_s": s, "sfpo_over_grpo": s / g,
                      "sfpo_over_grpo_4passes": s / g4, "reposition_s": med["sfpo"]["time/reposition"],
                      "steps": args.steps, "num_prompts": cfg.rollout.num_prompts,
                      "group_size": cfg.rollout.group_size}))


if __name__ == "__main__":
    main()
