"""Per-step time and extra memory of SFPOTrainer over GRPOTrainer under DeepSpeed ZeRO stages 1-3 (bench_trl's setup).

Per stage, three methods, each in its own process, taking turns over ``--rounds``: TRL's GRPOTrainer (one pass per
generation batch), GRPOTrainer with num_iterations=K+1 (SFPO's passes and optimizer steps without the reposition)
and SFPOTrainer (K=3, α=0.8). SFPO's overhead is its step time over the K+1-pass GRPO's (same passes; the rest is
the snapshot, the reposition of the fp32 masters and the refresh of the module weights, also timed on their own).
Its extra memory is its live tensors minus GRPO's (CPU: a gc scan of all storages, each once; GPU: also
``torch.cuda.memory_allocated`` after training), expected to be one fp32 copy of this rank's master partition.
Without CUDA it runs DeepSpeed's CPU accelerator in one process (tests/integrations/ds_cpu.py).

    python benchmarks/bench_deepspeed.py                         # stages 1 2 3, fp32, tiny model, CPU
    python benchmarks/bench_deepspeed.py --bf16 --size small     # e.g. on one GPU (benchmarks/gpu_check_deepspeed.sh)

Prints one table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_trl import Setup  # noqa: E402  (also puts src/ first on the path)

METHODS = ("grpo", "grpo_passes", "sfpo")


def ds_config(stage: int, bf16: bool, offload: bool) -> dict:
    # "auto" sizes as in HF's example configs (from the hidden size); DeepSpeed's own defaults (5e8 elements) cost a
    # multi-GB buffer per step on a tiny model, the same for every method
    zero: dict = {"stage": stage, "reduce_bucket_size": "auto", "allgather_bucket_size": int(5e7),
                  **({"stage3_prefetch_bucket_size": "auto"} if stage == 3 else {})}
    if offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {"zero_optimization": zero, "bf16": {"enabled": bf16}, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            **({"zero_force_ds_cpu_optimizer": False} if offload else {})}  # TRL's torch AdamW, not DeepSpeedCPUAdam


def worker(method: str, stage: int, bf16: bool, offload: bool, setup: Setup) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    sys.path.insert(0, str(ROOT / "tests" / "integrations"))
    import ds_cpu

    ds_cpu.setup()
    import torch

    import bench_trl
    from sfpo.core.slow_fast import SlowFastUpdate
    from sfpo.integrations.deepspeed import ZeroPartitions

    timings: dict[str, list[float]] = {"reposition_s": [], "refresh_s": []}

    def timed(fn, key):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            timings[key].append(time.perf_counter() - t0)
            return out
        return run

    SlowFastUpdate.reposition = timed(SlowFastUpdate.reposition, "reposition_s")
    init = ZeroPartitions.__init__

    def timed_init(self, optimizer):
        init(self, optimizer)
        self.refresh = timed(self.refresh, "refresh_s")

    ZeroPartitions.__init__ = timed_init
    passes = 1 if method == "grpo" else setup.inner_steps + 1
    result = bench_trl._trl_run(setup, sfpo=method == "sfpo", passes=passes, use_cpu=False, bf16=bf16,
                                deepspeed=ds_config(stage, bf16, offload))
    result["params"] = sum(p.numel() for p in bench_trl._policy(setup)[1].parameters())  # ZeRO-3 empties the module's
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if torch.cuda.is_available():
        result["cuda_allocated_bytes"] = torch.cuda.memory_allocated()
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    result.update({k: statistics.median(v) if v else None for k, v in timings.items()})
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of the process group (see tests/integrations/tiny_trl.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(method: str, stage: int, args, setup: Setup) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--stage", str(stage), "--setup", json.dumps(asdict(setup))]
    cmd += ["--bf16"] * args.bf16 + ["--offload"] * args.offload
    env = {**os.environ, "OMP_NUM_THREADS": str(setup.threads), "MASTER_PORT": str(free_port())}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{method} stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3])
    p.add_argument("--bf16", action="store_true", help="bf16 module weights (fp32 masters)")
    p.add_argument("--offload", action="store_true", help="offload_optimizer to the CPU")
    p.add_argument("--rounds", type=int, default=2, help="processes per method and stage, run in turn")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    for key, value in asdict(Setup()).items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.stage, args.bf16, args.offload, Setup(**json.loads(args.setup)))
    setup = Setup(**{k: getattr(args, k) for k in asdict(Setup())})
    runs = {(s, m): [] for s in args.stages for m in METHODS}
    for _ in range(args.rounds):
        for stage in args.stages:
            for method in METHODS:
                runs[stage, method].append(run_worker(method, stage, args, setup))

    import deepspeed
    import torch
    import trl

    def med(rs, key):
        values = [v for r in rs for v in (r[key] if isinstance(r[key], list) else [r[key]]) if v is not None]
        return statistics.median(values) if values else None

    rows = {}
    for (stage, method), rs in runs.items():
        rows[stage, method] = {"step_s": med(rs, "step_s"), "cpu_s": med(rs, "cpu_s"),
                               "live_mb": med(rs, "live_tensor_bytes") / 2**20, "anchor_mb": rs[0]["anchor_bytes"] / 2**20,
                               "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "params": rs[0]["params"],
                               "reposition_ms": (med(rs, "reposition_s") or 0) * 1e3,
                               "refresh_ms": (med(rs, "refresh_s") or 0) * 1e3}
        if "cuda_allocated_bytes" in rs[0]:
            rows[stage, method]["cuda_mb"] = med(rs, "cuda_allocated_bytes") / 2**20
            rows[stage, method]["cuda_peak_mb"] = max(r["cuda_peak_bytes"] for r in rs) / 2**20
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({setup.threads} threads)"
    params = rows[args.stages[0], "grpo"]["params"]
    print(f"DeepSpeed {deepspeed.__version__}, torch {torch.__version__}, trl {trl.__version__}, {device}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, commit {commit}; one process; {'bf16' if args.bf16 else 'fp32'}"
          f"{', optimizer offload' if args.offload else ''}; testbed Qwen2 '{setup.size}' ({params / 1e6:.2f}M params); "
          f"{setup.prompts} prompts × {setup.generations} × {setup.tokens} tokens per step, "
          f"{setup.optimizer_steps_per_pass} optimizer steps per pass, K={setup.inner_steps}; medians of {setup.steps} "
          f"steps × {args.rounds} rounds")
    cuda = "cuda_mb" in rows[args.stages[0], "grpo"]
    print("| ZeRO | method | step s (wall) | step CPU s | × GRPO | × GRPO K+1 passes | live tensors MB | extra MB "
          "| anchor MB | reposition ms | refresh ms |" + (" CUDA alloc MB | CUDA peak MB |" if cuda else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cuda else ""))
    summary: dict = {}
    for (stage, method), r in rows.items():
        grpo, passes = rows[stage, "grpo"], rows[stage, "grpo_passes"]
        extra = r["live_mb"] - grpo["live_mb"]
        line = (f"| {stage} | {method} | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {r['step_s'] / grpo['step_s']:.2f} | "
                f"{r['step_s'] / passes['step_s']:.3f} | {r['live_mb']:.2f} | {extra:+.2f} | {r['anchor_mb']:.2f} | "
                f"{r['reposition_ms']:.2f} | {r['refresh_ms']:.2f} |")
        if cuda:
            line += f" {r['cuda_mb']:.1f} | {r['cuda_peak_mb']:.1f} |"
        print(line)
        if method == "sfpo":
            summary[f"zero{stage}"] = {
                "sfpo_over_grpo_passes": r["step_s"] / passes["step_s"],
                "sfpo_over_grpo_passes_cpu": r["cpu_s"] / passes["cpu_s"],
                "sfpo_over_grpo": r["step_s"] / grpo["step_s"], "step_s": r["step_s"],
                "extra_live_mb": extra, "anchor_mb": r["anchor_mb"],
                "anchor_over_fp32_params": r["anchor_mb"] * 2**20 / (4 * params),
                "reposition_ms": r["reposition_ms"], "refresh_ms": r["refresh_ms"],
                **({"extra_cuda_mb": r["cuda_mb"] - grpo["cuda_mb"],
                    "extra_cuda_peak_mb": r["cuda_peak_mb"] - grpo["cuda_peak_mb"]} if cuda else {})}
    summary.update(asdict(setup), rounds=args.rounds, bf16=args.bf16, offload=args.offload, params=params,
                   deepspeed=deepspeed.__version__, device=device, commit=commit)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
