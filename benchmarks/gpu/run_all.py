"""Every GPU question of this project in one command inside a budget (default 8 minutes), for a rare, bare GPU
machine: the parts run in order of value, each in its own process with a hard deadline, and each part's JSON is
written into the output folder the moment it ends, so a run cut short still returns what ran.

  native       the native trainer on a Qwen2.5-0.5B-shaped model: GRPO and SFPO steps in bf16, bf16 + activation
               checkpointing (all with the chunked log-prob head), that with full logits, and fp32 — per-phase times,
               peak memory, update MFU, SFPO/GRPO step ratio (benchmarks/gpu_check.py)
  equivalence  SFPO α=0 ≡ GRPO and α=1 ≡ GRPO-(K+1), native trainer and TRL's SFPOTrainer, deterministic CUDA
               (benchmarks/gpu/equivalence.py)
  zero         SFPOTrainer under DeepSpeed ZeRO-2 and ZeRO-3, bf16, reposition exactness on the fp32 masters
               and resume from ZeRO-3 checkpoints if a minute is left (benchmarks/gpu/zero.py)
  verl         not run: what it would need that such a machine cannot have, with the reason

    bash benchmarks/gpu/run_all.sh OUT                    # on the GPU (wheels: benchmarks/gpu/wheelhouse.sh)
    python benchmarks/gpu/run_all.py OUT --device cpu --tiny   # the rehearsal the tests run (≈30 s)

Writes six files into OUT, no folders (what a lent machine's $OUT brings back: at most 8 files): <part>.json per
part, summary.json and logs.txt (every part's output); scratch goes to --work. Prints a table, then one JSON
line. Parts that need CUDA write {"skipped": "no CUDA"} on --device cpu. A part that fails or overruns is
recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

# the native variants in order of value: what real runs use first, fp32 last
NATIVE_ORDER = ["bf16", "bf16+ckpt", "bf16+ckpt+full-logits", "fp32"]

VERL_REASONS = [
    "verl 0.9.1 requires transformers>=5.5.3,<5.11; the GPU machine has 5.17 and carrying another transformers "
    "would change what parts (a)-(c) measure",
    "Ray ships a 79 MB wheel for cp312 manylinux (ray 2.60.0), over the 64 MiB that travels with a command, and "
    "`import verl` imports it (verl/protocol.py), so even the worker contract, which starts no Ray actor, needs it",
    "vLLM (main_ppo's rollout) is not on the machine and its CUDA wheel is hundreds of MB",
    "tensordict (a verl requirement) is compiled and not on the machine",
]
VERL_INSTEAD = ("examples/verl/gpu_check.sh on a GPU machine of your own with `pip install \"verl[vllm]==0.9.1\"`; "
                "on CPU, benchmarks/verl_env.sh runs the worker contract under Ray and FSDP2")


@dataclass
class Part:
    name: str
    needs_cuda: bool
    share: float  # of the whole budget on a GPU; unused time passes to the parts after it
    command: Callable[..., list[str]] | None  # (args, out_json, work, seconds) -> argv; None: never run here


def native_command(args, out_json: Path, work: Path, seconds: float) -> list[str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import VARIANTS

    variants = [v for v in NATIVE_ORDER if v in VARIANTS]
    # gpu_check.py skips a run that would end after its budget; the margin leaves it time to write its JSON
    cmd = [PY, str(ROOT / "benchmarks" / "gpu_check.py"), str(work),
           "--device", args.device, "--variants", ",".join(variants), "--budget-s", f"{max(seconds - 20, 1):.0f}"]
    if args.tiny:
        cmd += ["--tiny", "--steps", "1"]
    else:
        cmd += ["--prompts", "32"]  # 32 prompts × 8 × 512 tokens: four variants inside the part's share
    return cmd


def equivalence_command(args, out_json: Path, work: Path, seconds: float) -> list[str]:
    return [PY, str(ROOT / "benchmarks" / "gpu" / "equivalence.py"), str(out_json), "--device", args.device,
            "--budget-s", f"{max(seconds - 30, 1):.0f}", *(["--tiny"] if args.tiny else [])]


def zero_command(args, out_json: Path, work: Path, seconds: float) -> list[str]:
    return [PY, str(ROOT / "benchmarks" / "gpu" / "zero.py"), str(out_json), "--work", str(work),
            "--budget-s", f"{max(seconds - 10, 1):.0f}"]


PARTS = [Part("native", False, 0.5, native_command),
         Part("equivalence", False, 0.2, equivalence_command),
         Part("zero", True, 0.3, zero_command),
         Part("verl", True, 0.0, None)]


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # whole or absent: a kill never leaves half a JSON


def run_part(name: str, argv: list[str], out_json: Path, work: Path, timeout_s: float, env: dict) -> dict:
    """Run one part in its own process group under a hard deadline; return its JSON (or why there is none)."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part's workers (DeepSpeed's) too
            proc.wait()
            rc = None
    seconds = time.perf_counter() - t0
    # gpu_check.py writes into a folder: its gpu_check.json is this part's result
    produced = work / "gpu_check.json" if name == "native" else out_json
    result = json.loads(produced.read_text()) if produced.exists() else {}
    if rc is None:
        result["error"] = f"timeout: killed after {timeout_s:.0f} s (its budget)"
    elif rc != 0 or not result:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        result["error"] = f"exit status {rc}: " + " | ".join(tail)[-1500:]
    result["part"] = {"seconds": round(seconds, 1), "exit_status": rc, "command": argv[1:]}
    return result


def machine() -> dict:
    import torch
    import transformers

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
    except OSError:
        info["commit"] = None
    # a copy of the working tree without .git (a lent machine's): the command line carries it (wheelhouse.sh)
    info["commit"] = info["commit"] or os.environ.get("SFPO_COMMIT")
    for pkg in ("trl", "deepspeed", "datasets", "accelerate", "peft"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001  (PackageNotFoundError, or broken metadata of a carried wheel)
            info[pkg] = None
    return info


def status(r: dict) -> str:
    """ok, skipped, or FAIL (an error, or a part whose own verdict is not ok)."""
    if "skipped" in r:
        return "skipped"
    return "FAIL" if "error" in r or r.get("ok") is False else "ok"


def headline(name: str, r: dict) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    if "error" in r:
        return f"ERROR {r['error'][:200]}"
    if name == "native":
        ratios = ", ".join(f"{v} {x['step']:.2f}x" for v, x in r.get("sfpo_over_grpo", {}).items())
        return f"{len([x for x in r['runs'] if 'time/step' in x])}/{len(r['runs'])} runs; SFPO/GRPO step: {ratios}"
    if name == "equivalence":
        return "; ".join(f"{k}: " + (", ".join(c["verdict"] for c in v["checks"].values()) if "checks" in v
                                     else v.get("skipped", "?")) for k, v in r.items() if k in ("native", "trl"))
    if name == "zero":
        return "; ".join(f"{k}: {v['verdict']}" for k, v in r.get("checks", {}).items())
    return ""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for the parts' JSON and logs (created)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for the rehearsal")
    p.add_argument("--tiny", action="store_true", help="tiny models and shapes: the whole path in seconds")
    p.add_argument("--budget-s", type=float, default=480.0, help="the whole run's limit (default 480 = 8 min)")
    p.add_argument("--parts", default=",".join(x.name for x in PARTS), help="subset, in this order")
    p.add_argument("--work", type=Path, default=None, help="scratch: runs, checkpoints (default: a new temp dir)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False (rehearse with --device cpu --tiny)")
    wanted = [x for x in args.parts.split(",") if x]
    unknown = sorted(set(wanted) - {x.name for x in PARTS})
    if unknown:
        p.error(f"unknown part(s) {unknown}; known: {[x.name for x in PARTS]}")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="sfpo_gpu_"))
    logs = args.out / "logs.txt"
    logs.write_text("")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(x for x in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if x)}
    summary = {"machine": machine(), "device": args.device, "tiny": args.tiny, "budget_s": args.budget_s,
               "parts": {}}
    parts = [x for x in PARTS if x.name in wanted]
    for i, part in enumerate(parts):
        left = args.budget_s - (time.perf_counter() - t_start)
        later = sum(x.share for x in parts[i + 1:] if x.command and not (x.needs_cuda and not cuda))
        # this part's share of the budget, plus what earlier parts left unused (kept back: the later parts' shares)
        seconds = left - later * args.budget_s
        if part.command is None:
            result = {"skipped": "needs Ray, vLLM and verl's own transformers", "reasons": VERL_REASONS,
                      "instead": VERL_INSTEAD}
        elif part.needs_cuda and not cuda:
            result = {"skipped": "no CUDA"}
        elif seconds < 10:
            result = {"skipped": f"budget ({left:.0f} s of {args.budget_s:.0f} s left, kept for later parts)"}
        else:
            out_json, part_work = args.out / f"{part.name}.json", work / part.name
            result = run_part(part.name, part.command(args, out_json, part_work, seconds), out_json, part_work,
                              seconds, env)
            with logs.open("a") as f:
                f.write(f"===== {part.name}: {' '.join(result['part']['command'])}\n")
                f.write((part_work / "log.txt").read_text(errors="replace") + "\n")
        write_json(args.out / f"{part.name}.json", result)
        summary["parts"][part.name] = {"status": status(result),
                                       "seconds": result.get("part", {}).get("seconds", 0.0),
                                       "headline": headline(part.name, result)}
        write_json(args.out / "summary.json", summary)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    write_json(args.out / "summary.json", summary)
    m = summary["machine"]
    print(f"run_all: {m['gpu'] or 'cpu'} | torch {m['torch']} | transformers {m['transformers']} | trl {m['trl']} | "
          f"deepspeed {m['deepspeed']} | budget {args.budget_s:.0f} s | {m['date']}")
    for name, s in summary["parts"].items():
        print(f"{name:<12}{s['status']:<8}{s['seconds']:>7.1f} s  {s['headline']}")
    print(f"total {summary['total_s']:.0f} s; JSON per part in {args.out}")
    print(json.dumps({"total_s": summary["total_s"], "parts": {k: v["status"] for k, v in summary["parts"].items()}}))
    return summary


if __name__ == "__main__":
    main()
