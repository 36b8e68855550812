#!/usr/bin/env bash
# The wheels benchmarks/gpu/run_all.sh needs on a bare GPU machine that cannot download: Python 3.12, x86-64
# manylinux, torch/transformers/accelerate/peft/pyarrow/pandas already there (this workplace's 'cuda' image), no
# TRL, datasets or DeepSpeed. Downloads exactly those and their missing dependencies (--no-deps: nothing else is
# pulled, so the torch there is never replaced) into .whl/ (git-ignored), builds DeepSpeed's wheel here from its
# source archive (it ships no wheel) as pure Python with DS_BUILD_OPS=0 (no op is compiled; SFPOTrainer under
# ZeRO uses torch's AdamW), checks the total stays under the 64 MiB that travels with a command, and prints the
# one command line to run there. Needs pip and network here; nothing of the GPU machine.
#     bash benchmarks/gpu/wheelhouse.sh            # seconds; prints the size and the command
# WHEEL_PYTHON=3.11 WHEEL_DIR=/tmp/wh311 builds the same set for another Python: how its completeness was checked
# here, in a Python 3.11 venv holding only the GPU image's packages (no 3.12 torch can be installed here).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
WH=${WHEEL_DIR:-.whl}
PYV=${WHEEL_PYTHON:-3.12}
LIMIT_MIB=64

# name==version, each with why it is missing there. Versions are the ones this project tests (pyproject.toml).
WHEELS=(
  trl==1.16.0                # SFPOTrainer's base (equivalence and ZeRO parts)
  datasets==5.2.0            # TRL imports it
  dill==0.4.1                # datasets
  multiprocess==0.70.19      # datasets
  hjson==3.1.0               # DeepSpeed's config reader
  pydantic==2.14.4           # DeepSpeed's config models
  pydantic_core==2.50.5      # pydantic (compiled: a wheel per Python version)
  annotated_types==0.8.0     # pydantic
  typing_inspection==0.4.5   # pydantic
)
DEEPSPEED=deepspeed==0.19.8  # source archive only: built below

rm -rf "$WH" && mkdir -p "$WH"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" \
  --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$WH" "${WHEELS[@]}"
# DeepSpeed's setup.py imports torch to decide which ops to build; with DS_BUILD_OPS=0 it builds none, so the
# wheel is py3-none-any and the local CPU torch does not leak into it.
DS_BUILD_OPS=0 DS_BUILD_STRING="" "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WH" "$DEEPSPEED"

n=$(ls "$WH"/*.whl | wc -l)
want=$(( ${#WHEELS[@]} + 1 ))
[ "$n" -eq "$want" ] || { echo "expected $want wheels in $WH, found $n:" >&2; ls "$WH" >&2; exit 1; }
ds=$(ls "$WH"/deepspeed-*.whl)
case "$ds" in *-py3-none-any.whl) ;; *) echo "DeepSpeed's wheel is not pure Python: $ds" >&2; exit 1 ;; esac
bytes=$(cat "$WH"/*.whl | wc -c)
# what travels with a command: tracked and untracked-not-ignored files, plus the carried wheels
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ls -1 "$WH"
echo "wheelhouse: $n wheels, $(mib "$bytes") MiB; with the working tree ($(mib "$tree") MiB): $(mib $((bytes + tree))) MiB" \
     "of the $LIMIT_MIB MiB that travel"
[ $((bytes + tree)) -lt $((LIMIT_MIB * 1048576)) ] || { echo "too large to travel" >&2; exit 1; }
echo
echo "On the GPU machine (carry: $WH), from the repository root:"
# the copy there has no .git: the commit (and whether the tree differs from it) travels on the command line
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
echo "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site" \
     "$WH/*.whl && PYTHONPATH=/tmp/site SFPO_COMMIT=$commit bash benchmarks/gpu/run_all.sh \$OUT"
