#!/usr/bin/env bash
# SFPO on verl, reproducibly on CPU: builds the separate environment verl needs (verl 0.9.1 pulls ray and pins an
# older transformers, so it never shares the main venv), runs the verl tests in it, and with --bench prints the
# per-step overhead of the SFPO worker against plain verl with the same passes (a table, then one JSON line).
#
#   bash benchmarks/verl_env.sh            # create or reuse the env, run the verl-marked tests (bench_verl's smoke too)
#   bash benchmarks/verl_env.sh --bench    # ... then benchmarks/bench_verl.py
#   VERL_ENV=/path/env BENCH_ARGS="--steps 8" bash benchmarks/verl_env.sh --bench
#
# The env defaults to ../verl-env beside the checkout (never inside it). torch==2.13.0 is installed first so verl
# finds it and pip does not pull a CUDA build; verl's own cpu/fsdp/vllm extras pin another torch, so use verl-core.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV=${VERL_ENV:-$(dirname "$ROOT")/verl-env}
PY=$ENV/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread per rank: the tests run 2 gloo ranks on 2 cores
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=disabled  # else Ray writes a token to ~/.ray

if ! { [ -x "$PY" ] && "$PY" -c "import verl, ray, pytest" 2>/dev/null; }; then
    python3 -m venv "$ENV"
    "$ENV/bin/pip" install -q torch==2.13.0
    "$ENV/bin/pip" install -q "verl[verl-core]==0.9.1" pytest
fi
# this checkout's sfpo (its entry point registers the plugin); --no-deps: torch and verl are already there
"$ENV/bin/pip" install -q --no-deps -e "$ROOT"
"$PY" -c "import verl, torch, transformers, ray; print('verl', verl.__version__, '| torch', torch.__version__,
'| transformers', transformers.__version__, '| ray', ray.__version__)" 2>/dev/null

cd "$ROOT"
# -o addopts=: not the checkout's `-n auto` (pytest-xdist is not installed here; these tests run serially)
"$PY" -m pytest -m verl tests/integrations/test_verl.py tests/test_benchmarks_smoke.py -o addopts= -p no:cacheprovider -q

[ "${1:-}" = "--bench" ] || exit 0
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
"$PY" benchmarks/bench_verl.py ${BENCH_ARGS:-}
