"""Does pinning the CPU kernel paths make the testbed bit-identical whatever kernels the CPU would pick?

Runs a short testbed warm-start and then a few SFPO steps from it, each in a fresh process under one setting of
MKL's conditional numerical reproducibility (``MKL_CBWR``), ATen's vector ISA (``ATEN_CPU_CAPABILITY``) and
oneDNN's ISA cap (``ONEDNN_MAX_CPU_ISA``), one thread; hashes the weights after each phase and times a step.
Settings that differ only in a forced capability stand in for two CPUs with different instruction sets.

    python benchmarks/kernel_pinning.py                      # ≈5 min on 2 cores
    python benchmarks/kernel_pinning.py --warm-steps 120 --rl-steps 5

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOBS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
# name -> environment; pairs that differ in one forced capability are the cross-CPU stand-ins
SETTINGS = {
    "default": {},
    "default (again)": {},
    "aten=avx2 mkl=AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    "aten=avx512 mkl=AVX2": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2"},
    "aten=default mkl=AVX2": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2"},
    "aten=default mkl=AVX512": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX512"},
    "pinned (onednn=SSE41)": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                              "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "pinned (onednn=AVX512_CORE)": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                                    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}


def _weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def child(warm_steps: int, rl_steps: int) -> None:
    """One setting (the environment was set by the parent before torch loaded): print one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from sfpo.config import load_config
    from sfpo.testbed import warm_start
    from sfpo.trainer import Trainer

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        path = warm_start("arithmetic", steps=warm_steps, stop_at=None, seed=0, cache_dir=tmp, progress=False)
        warm_cpu = time.process_time() - t0
        warm = _weights_hash(AutoModelForCausalLM.from_pretrained(path))
        cfg = load_config(ROOT / "configs" / "demo.yaml", [
            f"model.path={path}", f"steps={rl_steps}", "eval.every=0", f"output_dir={tmp}/rl", "threads=1",
            "algorithm.name=sfpo", "algorithm.switch=never", "log.progress=false", "log.tensorboard=false",
            "log.plot=false", "checkpoint_every=0"])
        trainer = Trainer(cfg)
        t0 = time.process_time()
        trainer.train()
        rl_cpu = time.process_time() - t0
        print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "warm_hash": warm,
                          "rl_hash": _weights_hash(trainer.model), "warm_cpu_s_per_step": warm_cpu / warm_steps,
                          "rl_cpu_s_per_step": rl_cpu / rl_steps}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warm-steps", type=int, default=60)
    p.add_argument("--rl-steps", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.warm_steps, args.rl_steps)
    rows = {}
    for name, env in SETTINGS.items():
        base = {k: v for k, v in os.environ.items() if k not in KNOBS}
        full = {**base, **env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.run([sys.executable, __file__, "--child", "--warm-steps", str(args.warm_steps),
                               "--rl-steps", str(args.rl_steps)], env=full, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"setting {name!r} failed:\n{proc.stderr[-3000:]}")
        rows[name] = {"env": env, **json.loads(proc.stdout.strip().splitlines()[-1])}
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    ref = rows["default"]
    print(f"{args.warm_steps} warm-start steps, then {args.rl_steps} SFPO steps (K=3), one thread; CPU seconds per "
          f"step (process time: other jobs on the cores do not inflate it)")
    print("| setting | ATen ISA in use | warm-start weights | after RL | warm s/step | RL s/step |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['capability']} | {r['warm_hash']} | {r['rl_hash']} | "
              f"{r['warm_cpu_s_per_step']:.3f} ({r['warm_cpu_s_per_step'] / ref['warm_cpu_s_per_step']:.2f}×) | "
              f"{r['rl_cpu_s_per_step']:.3f} ({r['rl_cpu_s_per_step'] / ref['rl_cpu_s_per_step']:.2f}×) |")

    def same(a: str, b: str) -> bool:
        return rows[a]["warm_hash"] == rows[b]["warm_hash"] and rows[a]["rl_hash"] == rows[b]["rl_hash"]

    verdict = {"deterministic_default": same("default", "default (again)"),
               "aten_isa_matters_with_mkl_fixed": not same("aten=avx2 mkl=AVX2", "aten=avx512 mkl=AVX2"),
               "mkl_path_matters_with_aten_fixed": not same("aten=default mkl=AVX2", "aten=default mkl=AVX512"),
               "onednn_isa_matters_when_pinned": not same("pinned (onednn=SSE41)", "pinned (onednn=AVX512_CORE)")}
    print(json.dumps({"warm_steps": args.warm_steps, "rl_steps": args.rl_steps, **verdict, "rows": rows}))


if __name__ == "__main__":
    main()
