"""Cost of the trainer's update guard (``SlowFastUpdate.distance_from_anchor``: ‖θ − θ0‖ and ‖θ0‖, run after every
pass when nan_guard is on) against one forward+backward of a batch, side by side in one process, medians.

    python benchmarks/bench_update_guard.py                  # 3M-parameter Qwen2, 64 × 32 tokens, 1 thread
    python benchmarks/bench_update_guard.py --hidden 512 --layers 8

Prints a table, then one JSON line with both times (wall and CPU) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sfpo.core import SlowFastUpdate


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()``."""
    runs = []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=1000, hidden_size=a.hidden, intermediate_size=2 * a.hidden,
                                         num_hidden_layers=a.layers, num_attention_heads=4, num_key_value_heads=4))
    update = SlowFastUpdate(model, inner_steps=0, alpha=0.0, keep_anchor=True)
    update.begin(active=False)  # takes the anchor, as every step does with nan_guard on
    ids = torch.randint(0, 1000, (a.batch, a.tokens))

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()

    guard = timed(update.distance_from_anchor, 3 * a.repeats)
    step = timed(fwd_bwd, a.repeats)
    params = sum(p.numel() for p in model.parameters())
    print(f"| params | guard ms (wall / cpu) | fwd+bwd {a.batch}×{a.tokens} ms (wall / cpu) | guard / fwd+bwd |")
    print("|---|---|---|---|")
    print(f"| {params / 1e6:.1f}M | {guard[0] * 1e3:.1f} / {guard[1] * 1e3:.1f} | {step[0] * 1e3:.0f} / "
          f"{step[1] * 1e3:.0f} | {guard[0] / step[0]:.4f} |")
    print(json.dumps({"params": params, "threads": a.threads, "guard_wall_s": guard[0], "guard_cpu_s": guard[1],
                      "fwd_bwd_wall_s": step[0], "fwd_bwd_cpu_s": step[1], "ratio_wall": guard[0] / step[0],
                      "machine": platform.processor() or platform.machine(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
