"""What computing each group's prompt once would save in the update (issue 26, item 3): a measurement, not a
feature of the trainer.

A GRPO batch holds every prompt ``generations`` times. The training forward (and the old-log-prob forward) runs
the prompt tokens once per completion; with the prompt computed once per group, its keys and values repeated
over the group's rows (gradients flow back through the repeat), and only the completions run per row, the same
log-probs come out with fewer token-rows through the model. This bench times, on bench_trl.py's model and batch
(testbed Qwen2, random init, 32 prompts × 8 completions × 16 tokens, 4 mini-batches per pass, one thread):

- one pass of forward + backward of a GRPO-style loss over the batch, full rows against prompt-once;
- the old-log-prob forward (no gradient) over the batch, full rows against prompt-once;

checks that both ways give the same log-probs and gradients (float32 rounding), and prints medians of
``--repeats`` with process CPU time beside wall time.

    python benchmarks/bench_prefix.py                          # bench_trl.py's shape
    python benchmarks/bench_prefix.py --prompts 2 --generations 2 --tokens 4 --repeats 1   # seconds

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_head import _commit  # noqa: E402
from bench_trl import Setup, _policy  # noqa: E402
from bench_update_guard import timed  # noqa: E402


def make_batch(tok, args):
    """Left-padded prompts (P, L) with their mask, completions (P·G, T) of random tokens, advantages (P·G,)."""
    import torch

    from sfpo.tasks.arithmetic import ArithmeticTask

    prompts = [ex.prompt for ex in ArithmeticTask().examples("train", args.prompts)]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    completions = torch.randint(0, len(tok), (args.prompts * args.generations, args.tokens), generator=g)
    advantages = torch.randn(args.prompts * args.generations, generator=g)
    return enc["input_ids"], enc["attention_mask"], completions, advantages


def logprobs_full(model, ids, mask, completions, groups: int):
    """Log-probs of the completions with every row holding its prompt (what the trainer does today)."""
    import torch

    ids_rows, mask_rows = ids.repeat_interleave(groups, 0), mask.repeat_interleave(groups, 0)
    x = torch.cat([ids_rows, completions], 1)
    m = torch.cat([mask_rows, torch.ones_like(completions)], 1)
    pos = (m.cumsum(-1) - 1).clamp_min(0)
    t = completions.shape[1]
    logits = model(input_ids=x, attention_mask=m, position_ids=pos, logits_to_keep=t + 1).logits[:, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, completions[..., None]).squeeze(-1)


def logprobs_prompt_once(model, ids, mask, completions, groups: int):
    """The same log-probs with each prompt run once and its keys/values repeated over its group's rows."""
    import inspect

    import torch
    from transformers import DynamicCache

    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # as HFEngine
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                **{kw: cache})
    first = out.logits[:, -1:].repeat_interleave(groups, 0)  # predicts each completion's first token
    cache.batch_repeat_interleave(groups)
    mask_rows = mask.repeat_interleave(groups, 0)
    t = completions.shape[1]
    m = torch.cat([mask_rows, torch.ones_like(completions)], 1)
    cpos = pos[:, -1:].repeat_interleave(groups, 0) + 1 + torch.arange(t)
    rest = model(input_ids=completions[:, :-1], attention_mask=m[:, :-1], position_ids=cpos[:, :-1],
                 use_cache=True, **{kw: cache}).logits
    logits = torch.cat([first, rest], 1)
    return torch.log_softmax(logits.float(), -1).gather(-1, completions[..., None]).squeeze(-1)


def one_pass(model, fn, batch, args, *, grad: bool):
    """A pass over the batch in ``mini_batches`` slices of whole groups: forward + backward of the loss when
    ``grad``, a no-grad forward otherwise. Returns (log-probs, gradients) for the check."""
    import torch

    ids, mask, completions, adv = batch
    per = args.prompts // args.mini_batches
    lps = []
    model.zero_grad(set_to_none=True)
    for k in range(args.mini_batches):
        p = slice(k * per, (k + 1) * per)
        r = slice(k * per * args.generations, (k + 1) * per * args.generations)
        with torch.set_grad_enabled(grad):
            lp = fn(model, ids[p], mask[p], completions[r], args.generations)
            if grad:
                (-(lp.mean(-1) * adv[r]).mean() / args.mini_batches).backward()
        lps.append(lp.detach())
    grads = [q.grad.clone() for q in model.parameters() if q.grad is not None] if grad else []
    return torch.cat(lps), grads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--mini-batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", default="tiny")
    args = ap.parse_args(argv)
    if args.prompts % args.mini_batches:
        ap.error("--prompts must be a multiple of --mini-batches (mini-batches hold whole groups)")
    import torch

    tok, model = _policy(Setup(threads=args.threads, size=args.size))
    model.train()
    batch = make_batch(tok, args)
    rows = args.prompts * args.generations
    prompt_len = batch[0].shape[1]
    token_rows = {"full": rows * (prompt_len + args.tokens),
                  "prompt_once": args.prompts * prompt_len + rows * args.tokens}

    lp_full, g_full = one_pass(model, logprobs_full, batch, args, grad=True)
    lp_once, g_once = one_pass(model, logprobs_prompt_once, batch, args, grad=True)
    lp_err = (lp_full - lp_once).abs().max().item()
    grad_err = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item() for a, b in zip(g_full, g_once))
    if lp_err > 1e-4 or grad_err > 1e-4:
        raise SystemExit(f"prompt-once differs from full rows: log-probs {lp_err:.2e}, gradients {grad_err:.2e}")

    res = {}
    for name, fn in (("full", logprobs_full), ("prompt_once", logprobs_prompt_once)):
        res[name] = {}
        for phase, grad in (("pass", True), ("old_logprobs", False)):
            run = lambda fn=fn, grad=grad: one_pass(model, fn, batch, args, grad=grad)  # noqa: E731
            run()  # warm-up
            res[name][phase] = timed(run, args.repeats)
    print(f"{args.prompts} prompts × {args.generations} completions, prompt {prompt_len} + {args.tokens} tokens, "
          f"{args.mini_batches} mini-batches, {args.threads} thread(s); medians of {args.repeats}")
    print(f"token-rows through the model: full {token_rows['full']}, prompt-once {token_rows['prompt_once']} "
          f"({token_rows['prompt_once'] / token_rows['full']:.2f}×)")
    print("| phase | full wall (s) | full CPU (s) | prompt-once wall (s) | prompt-once CPU (s) | CPU ratio |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for phase in ("pass", "old_logprobs"):
        (fw, fc), (ow, oc) = res["full"][phase], res["prompt_once"][phase]
        ratios[phase] = oc / fc
        print(f"| {phase} | {fw:.3f} | {fc:.3f} | {ow:.3f} | {oc:.3f} | {oc / fc:.2f}× |")
    print(f"check: max |Δ log-prob| {lp_err:.1e}, max relative Δ gradient {grad_err:.1e}")
    print(json.dumps({"bench": "prefix", "commit": _commit(), "torch": torch.__version__, "threads": args.threads,
                      "shape": {"prompts": args.prompts, "generations": args.generations, "prompt_tokens": prompt_len,
                                "tokens": args.tokens, "mini_batches": args.mini_batches},
                      "token_rows": token_rows, "results": res, "cpu_ratio": ratios,
                      "logprob_err": lp_err, "grad_rel_err": grad_err}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
