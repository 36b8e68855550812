"""Nucleus sampling cost at a real vocabulary: the top-k nucleus search against the full-vocabulary sort it
replaced, inside HFEngine's decode loop, on a tiny Qwen2 with Qwen2.5's 151,936-token vocabulary.

    python benchmarks/bench_top_p.py                          # 32 sequences × 16 tokens, top-p 0.7
    python benchmarks/bench_top_p.py --sharpness 0 --repeats 5

``--sharpness`` scales the final norm so that the random-init model's next-token distribution is peaked like a
trained LM's (its nucleus size is printed); 1 leaves the near-uniform init, the worst case for a top-k search.
Both variants run side by side in one process with the same seed (medians over repeats; CPU time beside wall
time) and must draw the same tokens. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import sfpo.rollout.hf as hf  # noqa: E402
from sfpo.rollout import HFEngine, SamplingParams  # noqa: E402


def sorted_top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The engine's filter before: sort the whole vocabulary every step."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def big_vocab_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "0123456789+="
    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    vocab.update({f"<t{i}>": i for i in range(len(vocab), vocab_size)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--top-p", type=float, default=0.7)
    p.add_argument("--sharpness", type=float, default=40.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = big_vocab_tokenizer(args.vocab)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=2, num_key_value_heads=2,
                      tie_word_embeddings=True, max_position_embeddings=128, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(args.sharpness)
    prompts = [f"{i}+{i + 1}=" for i in range(args.prompts)]
    params = SamplingParams(n=args.n, temperature=1.0, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                            seed=0)
    with torch.no_grad():
        ids, mask = HFEngine(model, tok).encode_prompts(prompts)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
        nucleus = float((hf.top_p_filter(logits, args.top_p) > float("-inf")).sum(-1).float().mean())

    variants = {"sort (before)": sorted_top_p_filter, "top-k (after)": hf.top_p_filter}
    results, samples = {}, {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            hf.top_p_filter = fn
            w0, c0 = time.perf_counter(), time.process_time()
            r = HFEngine(model, tok).generate(prompts, params)
            results.setdefault(name, []).append((time.perf_counter() - w0, time.process_time() - c0))
            samples[name] = r.completion_ids
    hf.top_p_filter = variants["top-k (after)"]
    x = torch.randn(args.prompts * args.n, args.vocab) * 3
    filt = {}
    for name, fn in variants.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn(x, args.top_p)
            times.append(time.perf_counter() - t0)
        filt[name] = statistics.median(times)

    same = torch.equal(*samples.values())
    steps = samples["top-k (after)"].shape[1]
    print(f"vocab {args.vocab}, {args.prompts}×{args.n} sequences, {steps} decode steps, top-p {args.top_p}, "
          f"mean nucleus {nucleus:.1f} tokens, torch threads {torch.get_num_threads()} (cores may be shared)")
    print(f"{'variant':<16}{'generate wall s':>16}{'generate cpu s':>16}{'filter ms*':>16}")
    row = {}
    for name in variants:
        wall = statistics.median(w for w, _ in results[name])
        cpu = statistics.median(c for _, c in results[name])
        row[name] = wall
        print(f"{name:<16}{wall:>16.3f}{cpu:>16.3f}{1e3 * filt[name]:>16.2f}")
    print(f"same tokens: {same}   (*one filter call on N(0, 3²) logits, a flat worst case: nucleus of thousands)")
    print(json.dumps({"vocab": args.vocab, "sequences": args.prompts * args.n, "steps": steps, "top_p": args.top_p,
                      "nucleus_tokens": nucleus, "generate_s_sort": row["sort (before)"],
                      "generate_s_topk": row["top-k (after)"], "filter_ms_sort": 1e3 * filt["sort (before)"],
                      "filter_ms_topk": 1e3 * filt["top-k (after)"],
                      "speedup_generate": row["sort (before)"] / row["top-k (after)"], "same_tokens": same}))


if __name__ == "__main__":
    main()
