"""SFPOTrainer under DeepSpeed ZeRO-2 and ZeRO-3 on one GPU in bf16: part (c) of benchmarks/gpu/run_all.py.

Runs tests/integrations/deepspeed_worker.py (one process per check, deterministic kernels there) with its
scenarios alpha_one (≡ GRPOTrainer with K+1 iterations), alpha_zero (≡ plain GRPOTrainer) and reposition (α=0.8
against GRPO repositioned by hand through DeepSpeed's public fp32-master API, and the masters against the float64
formula θ0 + α(θK − θ0)) for ZeRO-2 and ZeRO-3, then, if at least a minute is left, resume (ZeRO-3 checkpoints
inside a fast pass and inside the slow pass, against the uninterrupted run). Judged as
benchmarks/gpu_check_deepspeed.sh does: the masters within 2^-21 of the formula (fp32 rounding), the module
weights equal to the masters cast, every equivalence below 1e-4 while skipping the reposition moves them by more
than 1e-3 (bit identity is reported when it holds). The timing benchmark stays in gpu_check_deepspeed.sh.

    python benchmarks/gpu/zero.py OUT.json [--budget-s 150] [--checks zero2,zero3,zero3_resume]

Needs CUDA, TRL and DeepSpeed (benchmarks/gpu/wheelhouse.sh); ends with one JSON line and writes OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "integrations" / "deepspeed_worker.py"
EQUIVALENCES = "alpha_one,alpha_zero,reposition"
# name: (ZeRO stage, the worker's scenarios, seconds it must have left to start; the optional check last)
CHECKS = {"zero2": (2, EQUIVALENCES, 20), "zero3": (3, EQUIVALENCES, 20), "zero3_resume": (3, "resume", 60)}
FORMULA_REL_ERR = 2 ** -21  # fp32 rounding of θ0 + α(θK − θ0) by lerp, relative to max(|θ0|, |θK|)
EQUIV_TOL = 1e-4  # equivalences: bf16 module weights round masters at ~4e-3; a missing reposition moves them ~1e-2
MIN_EFFECT = 1e-3  # the no-reposition control must move the weights by more than this, else the check is blind


def ds_config(stage: int, bf16: bool = True) -> dict:
    return {"zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
            "bf16": {"enabled": bf16}, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}


def judge(r: dict) -> dict:
    """The worker's result JSON (any of its scenarios) → the diffs that matter and a verdict."""
    diffs, facts, ok = {}, {}, True
    for name in ("alpha_one", "alpha_zero"):
        if name in r:
            diffs[name] = r[name]["diff"]
    if "reposition" in r:
        rep = r["reposition"]
        diffs |= {"reposition_vs_manual": rep["diff_manual"], "module_vs_master": max(rep["module_vs_master"])}
        facts = {k: rep[k] for k in ("formula_rel_err", "diff_no_reposition", "repositions", "anchor_numel",
                                     "param_numel")} | {"zero_optimizer": rep["zero"]}
        ok = rep["formula_rel_err"] < FORMULA_REL_ERR and rep["diff_no_reposition"] > MIN_EFFECT
    if "resume" in r:
        diffs |= {f"resume_at_{k}": v for k, v in r["resume"]["diffs"].items()}
    worst = max(diffs.values())
    ok = ok and worst < EQUIV_TOL
    verdict = "FAIL" if not ok else ("PASS (bit-identical)" if worst == 0 else f"PASS (max diff {worst:.1e})")
    return {"verdict": verdict, "ok": ok, "diffs": diffs, **facts}


def run_check(stage: int, scenarios: str, work: Path, timeout_s: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result_json, log = work / "result.json", work / "worker.log"
    # deterministic cuBLAS (the worker turns on torch's deterministic algorithms when it runs on CUDA)
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", **os.environ, "MASTER_PORT": str(20000 + random.randrange(20000)),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            proc = subprocess.run([sys.executable, str(WORKER), json.dumps(ds_config(stage)), str(work / "runs"),
                                   str(result_json), scenarios], stdout=f, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout_s, cwd=ROOT)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - t0
    if not result_json.exists():
        tail = log.read_text(errors="replace")[-2000:]
        return {"ok": False, "verdict": f"FAIL: the worker did not finish (exit {rc})", "seconds": seconds,
                "log_tail": tail}
    return {**judge(json.loads(result_json.read_text())), "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the JSON file to write")
    p.add_argument("--budget-s", type=float, default=150.0)
    p.add_argument("--work", type=Path, default=None, help="scratch for the runs (default: a new temp dir)")
    p.add_argument("--checks", default=",".join(CHECKS), help=f"subset of {','.join(CHECKS)}, in that order")
    p.add_argument("--cpu", action="store_true", help="DeepSpeed's CPU accelerator instead (minutes; how this "
                                                      "script was tried without a GPU)")
    args = p.parse_args(argv)
    import torch

    if not (torch.cuda.is_available() or args.cpu):
        p.error("needs CUDA (or --cpu: DeepSpeed's CPU accelerator, as tests/integrations/test_trl_deepspeed.py)")
    import deepspeed

    t0 = time.perf_counter()
    names = [c for c in args.checks.split(",") if c]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        p.error(f"unknown check(s) {unknown}; known: {list(CHECKS)}")
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "deepspeed": deepspeed.__version__, "bf16": True, "checks": {}}
    work = args.work or Path(tempfile.mkdtemp(prefix="sfpo_zero_"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        stage, scenarios, needs_s = CHECKS[name]
        left = args.budget_s - (time.perf_counter() - t0)
        if left < needs_s:
            result["checks"][name] = {"skipped": f"budget ({left:.0f} s left, needs {needs_s} s)",
                                      "verdict": "skipped", "scenarios": scenarios}
            continue
        check = run_check(stage, scenarios, work / name, left / (len(names) - i))
        result["checks"][name] = {**check, "scenarios": scenarios}
        args.out.write_text(json.dumps(result, indent=2))  # a check's verdict survives a later kill
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    ran = [c for c in result["checks"].values() if "skipped" not in c]
    result["ok"] = bool(ran) and all(c["ok"] for c in ran)
    result["total_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(result, indent=2))
    for name, c in result["checks"].items():
        print(f"{name} (bf16): {c['verdict']} {json.dumps(c.get('diffs', {}))}")
    print(json.dumps({"ok": result["ok"], "total_s": result["total_s"],
                      "verdicts": {n: c["verdict"] for n, c in result["checks"].items()}}))
    return result


if __name__ == "__main__":
    main()
