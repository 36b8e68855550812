"""Rollout speed on tiny models: transformers ``model.generate`` against the project's HFEngine decode loop, on
the same model, prompts and sampling settings (side by side in one process, medians over repeats).

    python benchmarks/bench_rollout.py                 # ~1M-parameter Qwen2, 256 samples × 16 tokens
    python benchmarks/bench_rollout.py --hidden 256 --layers 8 --repeats 5

Prints a table, then one JSON line with tokens/s of each and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tiny import make_tokenizer  # noqa: E402  (the char tokenizer the tests build)
from sfpo.rollout import HFEngine, SamplingParams  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = make_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                      tie_word_embeddings=True, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    # no EOS bias: random weights rarely emit EOS, so both paths decode the full length (a fair token count)
    n_params = sum(p.numel() for p in model.parameters())
    prompts = [f"{i % 50}+{(7 * i) % 50}+{(3 * i) % 50}=" for i in range(args.prompts)]
    engine = HFEngine(model, tok)
    sp = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)

    def run_engine() -> int:
        return engine.generate(prompts, sp).num_tokens

    ids, mask = engine.encode_prompts(prompts)
    ids, mask = ids.repeat_interleave(args.n, 0), mask.repeat_interleave(args.n, 0)

    @torch.no_grad()
    def run_generate() -> int:
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                             top_k=0, max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        gen = out[:, ids.shape[1]:]
        return int((gen != tok.pad_token_id).sum())

    results = {"hf_generate": [], "sfpo_engine": []}
    for fn in (run_generate, run_engine):  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in (("hf_generate", run_generate), ("sfpo_engine", run_engine)):
            t0 = time.perf_counter()
            tokens = fn()
            results[name].append(tokens / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in results.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"model: Qwen2 {n_params / 1e6:.2f}M params; batch {args.prompts}×{args.n}, {args.max_new_tokens} new tokens;"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, commit {commit}")
    print(f"| engine | tokens/s (median of {args.repeats}) | per decode step (ms) |")
    print("|---|---|---|")
    batch = args.prompts * args.n
    for k, v in med.items():
        print(f"| {k} | {v:,.0f} | {1000 * batch / v:.1f} |")
    print(json.dumps({"params": n_params, "hf_generate_tok_s": med["hf_generate"],
                      "engine_tok_s": med["sfpo_engine"], "speedup": med["sfpo_engine"] / med["hf_generate"]}))


if __name__ == "__main__":
    main()
