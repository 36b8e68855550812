#!/usr/bin/env bash
# Every GPU question of this project in one command, inside a budget (default 480 s = 8 minutes), offline:
# benchmarks/gpu/run_all.py's parts in order of value, each part's JSON in OUT as soon as it ends. On a bare
# machine, carry the wheels first (benchmarks/gpu/wheelhouse.sh prints the whole command line).
#     bash benchmarks/gpu/run_all.sh OUT                         # on one CUDA GPU
#     BUDGET_S=300 bash benchmarks/gpu/run_all.sh OUT --parts native,equivalence
#     bash benchmarks/gpu/run_all.sh OUT --device cpu --tiny     # the rehearsal (≈30 s on 2 cores)
# The Python runner keeps each part inside its share; `timeout` here is the backstop for the runner itself.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: run_all.sh OUT [run_all.py options]}
shift
BUDGET_S=${BUDGET_S:-480}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=10 $((BUDGET_S + 30)) "${PYTHON:-python3}" benchmarks/gpu/run_all.py "$OUT" \
  --budget-s "$BUDGET_S" "$@"
