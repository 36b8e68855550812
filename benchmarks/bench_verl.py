"""Per-step overhead of the SFPO worker against plain verl running the same passes, on verl's real TrainingWorker
loop (FSDP2, one gloo rank, CPU): plain verl with ppo_epochs=K+1 vs SFPO (K, α=0.8: snapshot, reposition, drift
norm, bookkeeping) on the same tiny Qwen2 and batches, in one process, steps alternating so machine noise hits
both alike. Run in the verl env (benchmarks/verl_env.sh --bench):

    python benchmarks/bench_verl.py                       # hidden 128, 4 layers, 32 sequences, 9 timed steps each
    python benchmarks/bench_verl.py --hidden 256 --steps 15

Prints a table of medians and bests (wall and process CPU time), then one JSON line; on a shared machine the
CPU-time figures are the ones to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integrations"), str(ROOT / "tests"), str(ROOT / "src")]
from verl_cpu import CPU_ENV  # noqa: E402

os.environ.update(CPU_ENV)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=32, help="sequences per rollout batch")
    p.add_argument("--mini-batches", type=int, default=4)
    p.add_argument("--inner-steps", type=int, default=3)
    p.add_argument("--steps", type=int, default=9, help="timed steps per worker, after one warm-up step")
    args = p.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import TrainingWorker
    from verl_cpu import ppo_batch, ppo_loss_fn, save_tiny_qwen2, training_config

    from sfpo.integrations.verl import PLAN_KEY, SFPOTrainingWorker

    model_dir = save_tiny_qwen2(tempfile.mkdtemp(prefix="bench_verl_"), hidden=args.hidden, layers=args.layers)
    K = args.inner_steps
    workers = {}
    for name, cls in (("plain verl, ppo_epochs=K+1", TrainingWorker), ("SFPO worker", SFPOTrainingWorker)):
        w = cls(training_config(model_dir, lr=1e-4, micro_batch=args.batch // args.mini_batches))
        w.reset()
        w.set_loss_fn(ppo_loss_fn())
        workers[name] = w
    n_params = sum(p.numel() for p in next(iter(workers.values())).engine.module.parameters())

    def step(name: str, seed: int) -> tuple[float, float]:
        data = ppo_batch(14, batch=args.batch, prompt=8, response=24, seed=seed)
        mb = args.batch // args.mini_batches
        tu.assign_non_tensor(data, mini_batch_size=mb, global_batch_size=mb, seed=0, calculate_entropy=True,
                             dataloader_kwargs={"shuffle": False}, temperature=1.0)
        if name == "SFPO worker":
            tu.assign_non_tensor(data, epochs=1, **{PLAN_KEY: {"inner_steps": K, "alpha": 0.8,
                                                                 "optimizer_state": "carry", "active": True}})
        else:
            tu.assign_non_tensor(data, epochs=K + 1)
        t0, c0 = time.perf_counter(), time.process_time()
        workers[name].train_mini_batch(data)
        return time.perf_counter() - t0, time.process_time() - c0

    times = {name: [] for name in workers}
    for i in range(args.steps + 1):
        for name in (workers if i % 2 == 0 else reversed(list(workers))):  # alternate the order too
            wall, cpu = step(name, seed=i)
            if i:  # the first step of each warms up allocators and caches
                times[name].append((wall, cpu))

    med = {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in times.items()}
    best = {name: (min(w for w, _ in v), min(c for _, c in v)) for name, v in times.items()}
    plain, sfpo = med["plain verl, ppo_epochs=K+1"], med["SFPO worker"]
    plain_best, sfpo_best = best["plain verl, ppo_epochs=K+1"], best["SFPO worker"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    import verl

    print(f"model: Qwen2 {n_params / 1e6:.2f}M params fp32, FSDP2 on 1 gloo rank; batch {args.batch} × 32 tokens in "
          f"{args.mini_batches} mini-batches, K={K} ({K + 1} passes = {(K + 1) * args.mini_batches} optimizer steps); "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), verl {verl.__version__}, "
          f"{platform.machine()}, commit {commit}; medians of {args.steps} steps, interleaved")
    print("| worker | wall s/step (median) | CPU s/step (median) | wall best | CPU best |")
    print("|---|---|---|---|---|")
    for name, (w, c) in med.items():
        print(f"| {name} | {w:.3f} | {c:.3f} | {best[name][0]:.3f} | {best[name][1]:.3f} |")
    print(json.dumps({"params": n_params, "plain_s": round(plain[0], 4), "sfpo_s": round(sfpo[0], 4),
                      "overhead_wall": round(sfpo[0] / plain[0] - 1, 4), "overhead_cpu": round(sfpo[1] / plain[1] - 1, 4),
                      "overhead_cpu_best": round(sfpo_best[1] / plain_best[1] - 1, 4),
                      "steps": args.steps, "inner_steps": K, "commit": commit}))
    sys.stdout.flush()
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
