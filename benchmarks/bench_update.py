"""What the SFPO update itself costs on top of the passes it runs: one GRPO pass, the SFPO update (K=3, α=0.8,
carry: snapshot, 4 passes, reposition), the reposition alone (with and without the drift norm), the snapshot, and
the memory the update keeps alive. A ~10M-parameter Qwen2ForCausalLM built from a config, on CPU.

    python benchmarks/bench_update.py                  # 64 responses × 128 tokens, 4 mini-batches, 3 repeats
    python benchmarks/bench_update.py --repeats 5 --threads 0     # torch's default thread count

A pass is the base update of the paper's scripts: the batch in 4 mini-batches, one AdamW step each (grad-norm
clip 1.0), the GRPO loss (ε=0.2, entropy bonus 0.001, token_mean) on random group advantages, old log-probs
computed once at θ0. Timings are medians over ``--repeats``; the GRPO pass and the SFPO update alternate so that
machine noise hits both alike. Prints a table, then one JSON line (targets: reposition_fraction ≤ 0.01,
extra_memory_ratio ≤ 1.05).
"""

from __future__ import annotations

import argparse
import gc
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from sfpo.core import (LossConfig, SlowFastUpdate, compute_advantages, entropy_from_logits,  # noqa: E402
                       loss_normalizer, policy_loss, token_logprobs)


def build_model(layers: int, hidden: int, vocab: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).float().train()


def make_batch(args, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """Random prompts and responses of random length (padded to --tokens), grouped rewards → advantages."""
    g = torch.Generator().manual_seed(seed)
    n, p, t = args.responses, args.prompt_tokens, args.tokens
    lengths = torch.randint(t // 4, t + 1, (n,), generator=g)
    lengths[0] = t
    cmask = (torch.arange(t)[None] < lengths[:, None]).long()
    rewards = (torch.rand(n, generator=g) < 0.5).float()
    return {"ids": torch.cat([torch.randint(0, vocab, (n, p), generator=g),
                              torch.randint(0, vocab, (n, t), generator=g)], 1),
            "attn": torch.cat([torch.ones(n, p, dtype=torch.long), cmask], 1),
            "cmask": cmask, "adv": compute_advantages("grpo", rewards, args.group_size)}


def logprobs_and_entropy(model, batch, rows, prompt_tokens: int):
    """Per-token log-probs and entropies of the response tokens: (B, T) each."""
    ids, attn = batch["ids"][rows], batch["attn"][rows]
    logits = model(input_ids=ids, attention_mask=attn).logits[:, prompt_tokens - 1:-1]  # (B, T, V)
    return token_logprobs(logits, ids[:, prompt_tokens:]), entropy_from_logits(logits)


def make_pass(model, optimizer, batch, old_logprobs, args):
    """One GRPO pass: --mini-batches AdamW steps over the batch, micro-batched gradient accumulation."""
    cfg = LossConfig(clip_low=0.2, entropy_coef=0.001)
    params = [p for p in model.parameters() if p.requires_grad]
    n = args.responses
    minis = [slice(i, min(i + n // args.mini_batches, n)) for i in range(0, n, n // args.mini_batches)]

    def one_pass(mini_batches: int | None = None) -> float:
        """The whole pass; ``mini_batches`` cuts it short (warm-up and memory scan: nothing timed)."""
        total = 0.0
        for mini in minis[:mini_batches]:
            optimizer.zero_grad(set_to_none=True)
            norm = loss_normalizer(cfg.aggregation, batch["cmask"][mini])
            for start in range(mini.start, mini.stop, args.micro_batch):
                rows = slice(start, min(start + args.micro_batch, mini.stop))
                logp, ent = logprobs_and_entropy(model, batch, rows, args.prompt_tokens)
                loss, _ = policy_loss(logp, old_logprobs[rows], batch["adv"][rows], batch["cmask"][rows], cfg,
                                      entropy=ent, normalizer=norm)
                loss.backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total / len(minis)

    return one_pass


def live_storages() -> dict[int, int]:
    """Every tensor storage the garbage collector reaches: data pointer → bytes (independent of extra_bytes)."""
    gc.collect()
    out = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):
            s = obj.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="GRPO passes and SFPO updates timed (medians)")
    ap.add_argument("--reposition-repeats", type=int, default=30, help="repositions timed on their own")
    ap.add_argument("--responses", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128, help="response length (padded)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--mini-batches", type=int, default=4, help="optimizer steps per pass")
    ap.add_argument("--micro-batch", type=int, default=8, help="responses per forward/backward")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--inner-steps", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; 0 = torch's default. 1 by default: the results are ratios, and on a "
                         "shared machine several threads spin against other jobs (a pass ran 5-20x slower)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    model = build_model(args.layers, args.hidden, args.vocab, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    trainable_bytes = sum(p.numel() * p.element_size() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)
    batch = make_batch(args, args.vocab, args.seed)
    with torch.no_grad():  # old log-probs once at θ0, reused by every pass (as the official code does)
        old = torch.cat([logprobs_and_entropy(model, batch, slice(i, i + args.micro_batch), args.prompt_tokens)[0]
                         for i in range(0, args.responses, args.micro_batch)])
    one_pass = make_pass(model, optimizer, batch, old, args)
    one_pass(1)  # warm-up; AdamW's state exists from here on, so it is not counted as the update's memory

    before = live_storages()
    update = SlowFastUpdate(params, inner_steps=args.inner_steps, alpha=args.alpha, optimizer=optimizer,
                            optimizer_state="carry", track_drift=True)
    scanned = []  # storages alive inside the slow pass that were not before the update existed

    def scanning_pass() -> float:
        if update.phase == "slow":
            now = live_storages()
            scanned.append(sum(b for ptr, b in now.items() if ptr not in before))
        return one_pass(1)  # what the update keeps alive does not depend on the length of the pass

    update.step(scanning_pass)  # also the SFPO warm-up
    del before
    extra_bytes = update.extra_bytes()

    grpo_s, sfpo_s, in_step_repo = [], [], []
    for _ in range(args.repeats):
        grpo_s.append(timed(one_pass))
        t0 = time.perf_counter()
        m = update.step(one_pass)
        sfpo_s.append(time.perf_counter() - t0)
        in_step_repo.append(m["time/reposition"])

    # The reposition on its own, many times: θ0 from one snapshot, θ the current weights (each call moves them
    # further towards θ0, which changes nothing in the arithmetic done); abort() then puts θ0 back.
    repo = {}
    for drift in (True, False):
        update.track_drift = drift
        update.begin()
        repo[drift] = statistics.median(timed(update.reposition) for _ in range(args.reposition_repeats))
        update.abort()
    update.track_drift = True
    snaps = []
    for _ in range(args.reposition_repeats):
        snaps.append(timed(update.begin))  # the snapshot θ0 ← θ
        update.abort()
    snapshot_s = statistics.median(snaps)

    med = {"grpo_pass_s": statistics.median(grpo_s), "sfpo_update_s": statistics.median(sfpo_s),
           "reposition_s": repo[True], "reposition_no_drift_s": repo[False],
           "reposition_in_step_s": statistics.median(in_step_repo), "snapshot_s": snapshot_s}
    result = {
        "reposition_fraction": med["reposition_s"] / med["sfpo_update_s"],
        "reposition_no_drift_fraction": med["reposition_no_drift_s"] / med["sfpo_update_s"],
        "extra_memory_ratio": extra_bytes / trainable_bytes,
        "extra_memory_ratio_scanned": scanned[0] / trainable_bytes,
        "sfpo_over_grpo_pass": med["sfpo_update_s"] / med["grpo_pass_s"],
        **med, "grpo_pass_runs_s": grpo_s, "sfpo_update_runs_s": sfpo_s,
        "params": n_params, "trainable_bytes": trainable_bytes, "extra_bytes": extra_bytes,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "commit": commit(), "responses": args.responses, "tokens": args.tokens,
        "mini_batches": args.mini_batches, "inner_steps": args.inner_steps, "alpha": args.alpha,
    }

    print(f"command : python {' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}")
    print(f"machine : {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, python {platform.python_version()}, commit {result['commit']}")
    print(f"model   : Qwen2ForCausalLM {args.layers}×{args.hidden}, vocab {args.vocab}, {n_params / 1e6:.2f}M "
          f"params ({len(params)} tensors); batch {args.responses}×({args.prompt_tokens}+{args.tokens}) tokens, "
          f"{args.mini_batches} AdamW steps per pass, micro-batch {args.micro_batch}")
    print(f"SFPO    : K={args.inner_steps}, α={args.alpha}, carry; medians over {args.repeats} "
          f"(reposition/snapshot over {args.reposition_repeats})\n")
    rows = [("one GRPO pass", med["grpo_pass_s"], ""),
            (f"SFPO update ({args.inner_steps + 1} passes + reposition)", med["sfpo_update_s"],
             f"{result['sfpo_over_grpo_pass']:.2f}× a pass"),
            ("reposition, with drift norm", med["reposition_s"], f"{100 * result['reposition_fraction']:.3f}%"),
            ("reposition, without drift norm", med["reposition_no_drift_s"],
             f"{100 * result['reposition_no_drift_fraction']:.3f}%"),
            ("reposition inside the step (time/reposition)", med["reposition_in_step_s"], "lerp + state policy"),
            ("snapshot θ0 (begin)", med["snapshot_s"], f"{100 * med['snapshot_s'] / med['sfpo_update_s']:.3f}%")]
    print(f"{'':48s} {'seconds':>10s}  {'of the update':>14s}")
    for name, sec, note in rows:
        print(f"{name:48s} {sec:10.4f}  {note:>14s}")
    print(f"\nextra memory kept alive: {extra_bytes / 2**20:.2f} MiB = {result['extra_memory_ratio']:.4f}× the "
          f"trainable weights (extra_bytes); {result['extra_memory_ratio_scanned']:.4f}× by a scan of live tensors")
    print(f"targets: reposition ≤ 1% of the update ({'met' if result['reposition_fraction'] <= 0.01 else 'MISSED'}),"
          f" extra memory ≤ 1.05× ({'met' if result['extra_memory_ratio'] <= 1.05 else 'MISSED'})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
