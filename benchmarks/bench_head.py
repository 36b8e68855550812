"""Peak memory and time of the output head + loss, forward and backward, with full logits and chunked.

For each head shape (hidden d, vocabulary V) and tokens per micro-batch: final hidden states (tokens, d) that need
a gradient and a head weight (V, d) go through log-probs at temperature 0.7 plus entropies, then a loss that uses
both is backpropagated; "full" is today's path (``token_logprobs`` + ``entropy_from_logits`` of the (tokens, V)
logits), "chunked" is ``sfpo.core.head_logprobs``. Memory is the peak of live tensor bytes the pass creates (a
``TorchDispatchMode`` that sees every op's outputs, exact for CPU kernels; the weight's gradient, V·d·4 bytes,
counts in both), so it is the head's and loss's own memory, not the process's. The full path is measured only
up to ``--full-max-tokens`` (at 8k tokens it needs ~35 GB, more than this machine has) and extrapolated linearly in
tokens beyond, from its two largest measured sizes; the output says which rows are extrapolated. Time: the median
of ``--repeats`` forward+backward passes, wall and process CPU time, at ``--time-tokens`` tokens (both paths fit).

    python benchmarks/bench_head.py                                   # 0.5B and 1.5B heads, 2k and 8k tokens
    python benchmarks/bench_head.py --chunks 128 256 512 1024 2048    # choose the chunk size
    python benchmarks/bench_head.py --shapes 64x1000 --tokens 64 256 --time-tokens 64 --full-max-tokens 256

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from bench_memory import LiveBytes  # noqa: E402

from sfpo.core import entropy_from_logits, head_logprobs, token_logprobs  # noqa: E402

TEMPERATURE = 0.7


def _inputs(d: int, v: int, tokens: int):
    g = torch.Generator().manual_seed(0)
    weight = (0.02 * torch.randn(v, d, generator=g)).requires_grad_()
    hidden = torch.randn(tokens, d, generator=g).requires_grad_()
    targets = torch.randint(0, v, (tokens,), generator=g)
    return hidden, weight, targets


def _pass(hidden, weight, targets, chunk: int) -> None:
    """One forward + backward of a loss on log-probs and entropies (chunk 0: full logits)."""
    if chunk:
        logp, ent = head_logprobs(hidden, weight, targets, TEMPERATURE, chunk_size=chunk)
    else:
        logits = hidden @ weight.t()
        logp, ent = token_logprobs(logits, targets, TEMPERATURE), entropy_from_logits(logits, TEMPERATURE)
        del logits
    (-(logp.sum() + 0.001 * ent.sum())).backward()


def peak_bytes(d: int, v: int, tokens: int, chunk: int) -> int:
    """Peak live bytes created by one forward + backward (inputs excluded, the weight's gradient included)."""
    hidden, weight, targets = _inputs(d, v, tokens)
    with LiveBytes() as mode:
        _pass(hidden, weight, targets, chunk)
    return mode.peak


def seconds(d: int, v: int, tokens: int, chunk: int, repeats: int) -> tuple[float, float]:
    """(median wall, median process CPU) seconds of a forward + backward, after one untimed pass."""
    hidden, weight, targets = _inputs(d, v, tokens)
    walls, cpus = [], []
    for i in range(repeats + 1):
        hidden.grad = weight.grad = None
        w0, c0 = time.perf_counter(), time.process_time()
        _pass(hidden, weight, targets, chunk)
        if i:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["896x151936", "1536x151936"],
                   help="head shapes HIDDENxVOCAB (Qwen2.5-0.5B, Qwen2.5-1.5B)")
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192], help="tokens per micro-batch")
    p.add_argument("--chunks", type=int, nargs="+", default=[512], help="chunk sizes to measure")
    p.add_argument("--full-max-tokens", type=int, default=2048,
                   help="largest token count at which the full path is measured; larger ones are extrapolated")
    p.add_argument("--time-tokens", type=int, default=1024, help="tokens of the timed passes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for shape in args.shapes:
        d, v = (int(x) for x in shape.split("x"))
        measured = sorted({t for t in args.tokens if t <= args.full_max_tokens}
                          | {args.full_max_tokens // 2, args.full_max_tokens})
        full = {t: peak_bytes(d, v, t, 0) for t in measured}
        (t1, b1), (t2, b2) = sorted(full.items())[-2:]
        slope = (b2 - b1) / (t2 - t1)  # bytes per token; linear in tokens
        full_time = seconds(d, v, args.time_tokens, 0, args.repeats)
        for tokens in args.tokens:
            extrapolated = tokens not in full
            full_peak = b2 + slope * (tokens - t2) if extrapolated else full[tokens]
            for chunk in args.chunks:
                chunked_peak = peak_bytes(d, v, tokens, chunk)
                rows.append({"hidden": d, "vocab": v, "tokens": tokens, "chunk": chunk,
                             "full_peak_mb": full_peak / 2**20, "full_extrapolated": extrapolated,
                             "chunked_peak_mb": chunked_peak / 2**20, "memory_ratio": full_peak / chunked_peak,
                             "full_mb_per_token": slope / 2**20})
        for chunk in args.chunks:
            wall, cpu = seconds(d, v, args.time_tokens, chunk, args.repeats)
            for r in rows:
                if (r["hidden"], r["vocab"], r["chunk"]) == (d, v, chunk):
                    r.update({"time_tokens": args.time_tokens, "full_wall_s": full_time[0], "full_cpu_s": full_time[1],
                              "chunked_wall_s": wall, "chunked_cpu_s": cpu, "time_ratio_wall": wall / full_time[0],
                              "time_ratio_cpu": cpu / full_time[1]})
    print(f"head + loss (log-probs at T={TEMPERATURE} and entropies), forward + backward, fp32, CPU, "
          f"{args.threads} thread(s); peak of live tensor bytes; time at {args.time_tokens} tokens, median of "
          f"{args.repeats}")
    print(f"{'hidden':>7}{'vocab':>8}{'tokens':>7}{'chunk':>6}{'full MB':>11}{'chunked MB':>11}{'ratio':>7}"
          f"{'full s':>8}{'chunk s':>8}{'wall×':>7}{'cpu×':>7}")
    for r in rows:
        mark = "*" if r["full_extrapolated"] else " "
        print(f"{r['hidden']:>7}{r['vocab']:>8}{r['tokens']:>7}{r['chunk']:>6}{r['full_peak_mb']:>10.0f}{mark}"
              f"{r['chunked_peak_mb']:>11.0f}{r['memory_ratio']:>7.1f}{r['full_wall_s']:>8.2f}"
              f"{r['chunked_wall_s']:>8.2f}{r['time_ratio_wall']:>7.2f}{r['time_ratio_cpu']:>7.2f}")
    if any(r["full_extrapolated"] for r in rows):
        print(f"* extrapolated: the full path measured up to {args.full_max_tokens} tokens, linear in tokens beyond")
    result = {"bench": "head", "commit": _commit(), "machine": platform.machine(), "threads": args.threads,
              "temperature": TEMPERATURE, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
