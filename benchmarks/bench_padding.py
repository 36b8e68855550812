"""Padded share of the training forward's tokens: fixed-size micro-batches against token-budget buckets.

A micro-batch is padded to its longest prompt and response; ``optim.micro_batch_tokens`` sorts a mini-batch's rows
by length and packs them up to a token budget (``sfpo.batching.token_budget_rows``). Two shapes:

* testbed: one real rollout step of the cached testbed policy on arithmetic (32 prompts × 8, 16 new tokens);
* paper-like: 256 prompts × 8 responses in 4 mini-batches with SYNTHETIC lengths (prompts lognormal around 150
  tokens, each prompt's responses lognormal around a per-prompt median near 600 tokens, cut at 2,560 as the
  paper's limit): a stand-in for DAPO-Math rollouts of a 1.5B model, not measured ones.

    python benchmarks/bench_padding.py                  # warm-starts the testbed policy if it is not cached
    python benchmarks/bench_padding.py --testbed DIR    # or any arithmetic policy folder

Pure length arithmetic apart from the testbed rollout. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from sfpo.batching import token_budget_rows  # noqa: E402


def padding_frac(p: torch.Tensor, t: torch.Tensor, mini_batches: int, micro) -> float:
    """Padded / all token slots, for mini-batches of consecutive rows cut into ``micro(p, t)`` row groups."""
    n, slots, real = len(p), 0, 0
    bounds = [round(i * n / mini_batches) for i in range(mini_batches + 1)]
    for a, b in zip(bounds, bounds[1:]):
        pm, tm = p[a:b], t[a:b]
        for rows in micro(pm, tm):
            slots += len(rows) * int(pm[rows].max() + tm[rows].max())
            real += int(pm[rows].sum() + tm[rows].sum())
    return 1.0 - real / slots


def fixed(size: int):
    return lambda p, t: [torch.arange(i, min(i + size, len(p))) for i in range(0, len(p), size)]


def budget(tokens: int):
    return lambda p, t: token_budget_rows(p, t, tokens)


def testbed_lengths(path: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from sfpo.config import ModelConfig
    from sfpo.policy import load_policy
    from sfpo.rollout import HFEngine, SamplingParams
    from sfpo.tasks import get_task

    torch.manual_seed(0)
    task = get_task("arithmetic")
    model, tok = load_policy(ModelConfig(path=path, device="cpu"), "arithmetic", {})
    prompts = [ex.prompt for ex in task.examples("train", 32)]
    r = HFEngine(model, tok).generate(prompts, SamplingParams(n=8, max_new_tokens=16, seed=0))
    return r.prompt_mask.sum(-1), r.completion_mask.sum(-1)


def paper_like_lengths(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompts, group = 256, 8
    p = (150 * torch.exp(0.5 * torch.randn(prompts, generator=g))).clamp(40, 1500).round().long()
    median = 600 * torch.exp(0.6 * torch.randn(prompts, generator=g))  # hard problems get long answers
    t = (median[:, None] * torch.exp(0.5 * torch.randn(prompts, group, generator=g))).clamp(20, 2560).round().long()
    return p.repeat_interleave(group), t.flatten()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--testbed", default=None, help="policy folder for the testbed shape (default: the testbed's)")
    args = p.parse_args()
    rows = {}
    tp, tt = testbed_lengths(args.testbed)
    mean_row = float((tp + tt).float().mean())
    rows["testbed"] = {"rows": len(tp), "mini_batches": 1, "mean_row_tokens": mean_row,
                       "whole mini-batch": padding_frac(tp, tt, 1, fixed(len(tp))),
                       "micro 32": padding_frac(tp, tt, 1, fixed(32)),
                       "budget 32 rows": padding_frac(tp, tt, 1, budget(int(32 * mean_row)))}
    pp, pt = paper_like_lengths()
    mean_row = float((pp + pt).float().mean())
    rows["paper-like"] = {"rows": len(pp), "mini_batches": 4, "mean_row_tokens": mean_row,
                          "micro 1": padding_frac(pp, pt, 4, fixed(1)),
                          "micro 8": padding_frac(pp, pt, 4, fixed(8)),
                          "budget 8 rows": padding_frac(pp, pt, 4, budget(int(8 * mean_row))),
                          "budget 16k tokens": padding_frac(pp, pt, 4, budget(16_384))}
    print(f"{'shape':<12}{'rows':>6}{'mean row':>10}  padded share of the training tokens")
    for shape, r in rows.items():
        cols = {k: v for k, v in r.items() if k not in ("rows", "mini_batches", "mean_row_tokens")}
        print(f"{shape:<12}{r['rows']:>6}{r['mean_row_tokens']:>10.0f}  "
              + "   ".join(f"{k}: {100 * v:.1f}%" for k, v in cols.items()))
    print("budget N rows = a token budget of N × the mean row length (same tokens per micro-batch on average)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
