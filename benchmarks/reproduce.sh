#!/usr/bin/env bash
# The exact commands behind every number in docs/reproduction.md (run from the repository root, in the
# virtualenv the README sets up). Every finished run leaves a record in docs/reproduction/records/ and is never
# rerun, so re-running (here or on another machine, after pulling the committed records) continues the grid.
set -euo pipefail
cd "$(dirname "$0")/.."
# 1. quick mode (≤15 min on 2 cores): GRPO, GRPO with 4 passes, SFPO; one seed, 30 steps (records under runs/)
sfpo reproduce --quick
# 2. the grid of docs/reproduction.md, in this order, one thread per run, two runs side by side on 2 cores
#    (≈20 CPU-hours in all; it spans sessions: commit the records as they land):
#    per task, the lr sweep (1e-5..3e-4) of GRPO, GRPO-4, SFPO, trust-region SFPO on the selection unit
#    (policy 0, seed 0), then each method at its own best lr on 3 policies × seeds 1-3 (none of which chose the
#    lr); arithmetic, then countdown; then multiplication (untuned) and generation-heavy arithmetic (decoded 8
#    sequences at a time: benchmarks/phase_split.py) with
#    1 policy × 3 seeds at arithmetic's lrs; last the sweep's second seed
sfpo reproduce --grid issue12 --workers 2
# 3. the report alone, from the records (also what step 2 ends with)
#    (sfpo reproduce is the package's command; python benchmarks/reproduce.py is the same)
sfpo reproduce --analyse-only
python benchmarks/lr_sweep_table.py
# 4. the 2026-11-30 record (docs/reproduction/record_2026-11-30.json) came from the earlier harness:
#    main grid (GRPO, GRPO-4, SFPO with/without the switch; lr 1e-4, 3 seeds); its ablations are --grid ablations
sfpo reproduce --grid main --seeds 0 1 2 --records runs/reproduce/records_main --report runs/reproduce/report_main
# 5. the kernel-pinning measurement of docs/reproduction.md ("Same bits on every machine")
python benchmarks/kernel_pinning.py
