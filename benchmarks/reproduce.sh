#!/usr/bin/env bash
# The exact commands behind every number in docs/reproduction.md (run from the repository root, in the
# virtualenv the README sets up). Each finished run is reused, so re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1. quick mode (≤15 min on 2 cores): GRPO, GRPO with 4 passes, SFPO; one seed, 30 steps
python benchmarks/reproduce.py --quick
# 2. the published main table: GRPO, GRPO-4-passes, SFPO (entropy switch) and SFPO without it, 3 seeds
python benchmarks/reproduce.py --grid main --seeds 0 1 2 --report docs/reproduction
# 2b. learning-rate sweep (0.3x, 3x of the base lr; the 1x runs are step 2's), 2 seeds, one thread per run
python benchmarks/reproduce.py --grid lr --seeds 0 1 --report runs/reproduce/report_lr threads=1
python benchmarks/lr_sweep_table.py --seeds 0 1
# 3. everything: + α/K/optimizer-state/no-slow ablations, LR sweep (0.3×, 1×, 3×), noisy rewards, countdown
python benchmarks/reproduce.py --grid all --seeds 0 1 2 --report docs/reproduction_all
