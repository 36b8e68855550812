"""SFPOTrainer under DeepSpeed ZeRO-2 and ZeRO-3 on one GPU in bf16: part (c) of benchmarks/gpu/run_all.py.

Runs tests/integrations/deepspeed_worker.py (one process per ZeRO stage, deterministic kernels there) with its
scenarios alpha_one (≡ GRPOTrainer with K+1 iterations), alpha_zero (≡ plain GRPOTrainer) and reposition (α=0.8
against GRPO repositioned by hand through DeepSpeed's public fp32-master API, and the masters against the float64
formula θ0 + α(θK − θ0)), and judges each stage as benchmarks/gpu_check_deepspeed.sh does: the masters within
2^-21 of the formula (fp32 rounding), the module weights equal to the masters cast, and every equivalence below
1e-4 while skipping the reposition moves them by more than 1e-3 (bit identity is reported when it holds).
Resume and the timing benchmark stay in gpu_check_deepspeed.sh: they do not fit this part's two minutes.

    python benchmarks/gpu/zero.py OUT.json [--budget-s 150] [--stages 2,3]

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
SCENARIOS = "alpha_one,alpha_zero,reposition"
FORMULA_REL_ERR = 2 ** -21  # fp32 rounding of θ0 + α(θK − θ0) by lerp, relative to max(|θ0|, |θK|)
EQUIV_TOL = 1e-4  # equivalences: bf16 module weights round masters at ~4e-3; a missing reposition moves them ~1e-2
MIN_EFFECT = 1e-3  # the no-reposition control must move the weights by more than this, else the check is blind


def ds_config(stage: int, bf16: bool = True) -> dict:
    return {"zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
            "bf16": {"enabled": bf16}, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}


def judge(r: dict) -> dict:
    """The worker's result JSON → the diffs that matter and a verdict."""
    rep = r["reposition"]
    diffs = {"alpha_one": r["alpha_one"]["diff"], "alpha_zero": r["alpha_zero"]["diff"],
             "reposition_vs_manual": rep["diff_manual"], "module_vs_master": max(rep["module_vs_master"])}
    worst = max(diffs.values())
    ok = (rep["formula_rel_err"] < FORMULA_REL_ERR and rep["diff_no_reposition"] > MIN_EFFECT
          and worst < EQUIV_TOL)
    verdict = "FAIL" if not ok else ("PASS (bit-identical)" if worst == 0 else f"PASS (max diff {worst:.1e})")
    return {"verdict": verdict, "ok": ok, "diffs": diffs, "formula_rel_err": rep["formula_rel_err"],
            "diff_no_reposition": rep["diff_no_reposition"], "repositions": rep["repositions"],
            "zero_optimizer": rep["zero"], "anchor_numel": rep["anchor_numel"], "param_numel": rep["param_numel"]}


def run_stage(stage: int, work: Path, timeout_s: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result_json, log = work / "result.json", work / "worker.log"
    # deterministic cuBLAS (the worker turns on torch's deterministic algorithms when it runs on CUDA)
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", **os.environ, "MASTER_PORT": str(20000 + random.randrange(20000)),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            proc = subprocess.run([sys.executable, str(WORKER), json.dumps(ds_config(stage)), str(work / "runs"),
                                   str(result_json), SCENARIOS], stdout=f, stderr=subprocess.STDOUT, env=env,
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
    p.add_argument("--stages", default="2,3")
    p.add_argument("--cpu", action="store_true", help="DeepSpeed's CPU accelerator instead (minutes; how this "
                                                      "script was tried without a GPU)")
    args = p.parse_args(argv)
    import torch

    if not (torch.cuda.is_available() or args.cpu):
        p.error("needs CUDA (or --cpu: DeepSpeed's CPU accelerator, as tests/integrations/test_trl_deepspeed.py)")
    import deepspeed

    t0 = time.perf_counter()
    stages = [int(s) for s in args.stages.split(",")]
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "deepspeed": deepspeed.__version__, "bf16": True,
              "scenarios": SCENARIOS.split(","), "stages": {}}
    work = args.work or Path(tempfile.mkdtemp(prefix="sfpo_zero_"))
    for i, stage in enumerate(stages):
        left = args.budget_s - (time.perf_counter() - t0)
        if left < 20:
            result["stages"][f"zero{stage}"] = {"ok": False, "verdict": f"skipped: budget ({left:.0f} s left)"}
            continue
        result["stages"][f"zero{stage}"] = run_stage(stage, work / f"zero{stage}", left / (len(stages) - i))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))  # a stage's verdict survives a later kill
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    result["ok"] = all(s["ok"] for s in result["stages"].values())
    result["total_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(result, indent=2))
    for name, s in result["stages"].items():
        print(f"{name}-bf16: {s['verdict']} {json.dumps(s.get('diffs', {}))}")
    print(json.dumps({"ok": result["ok"], "total_s": result["total_s"],
                      "verdicts": {n: s["verdict"] for n, s in result["stages"].items()}}))
    return result


if __name__ == "__main__":
    main()
