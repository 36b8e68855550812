"""SFPO's off settings against GRPO on one device, for the native trainer and for TRL's SFPOTrainer: α=0 ≡ GRPO
and α=1 ≡ GRPO with K+1 passes, weight for weight after a few steps. Part (b) of benchmarks/gpu/run_all.py.

On CUDA, deterministic settings are set first (CUBLAS_WORKSPACE_CONFIG, ``use_deterministic_algorithms`` with
warnings recorded, no TF32, no cuDNN autotuning), and GRPO is run twice to measure the device's own rerun noise.
The verdict per pair: "bit-identical" (max |Δw| = 0); else "within 10x rerun noise" when reruns differ too (a
kernel without a deterministic version; the JSON names it); else FAIL. So where reruns are bit-identical, only
bit identity passes. A control (SFPO α=0.8 against GRPO-(K+1)) shows how far a real change moves the weights.
On CPU the same code runs in seconds (the rehearsal); the CPU test suite already holds these equivalences.

    python benchmarks/gpu/equivalence.py OUT.json [--device cuda|cpu] [--tiny] [--budget-s 90]

Ends with one JSON line; writes OUT.json. Does not measure speed (part (a) does) or DeepSpeed (part (c)).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for sub in ("src", "tests", "tests/integrations"):  # the tiny model, tokenizer, task and TRL setup of the tests
    sys.path.insert(0, str(ROOT / sub))
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts: deterministic GEMMs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

K = 2  # inner steps: SFPO α=1 ≡ GRPO with K+1 passes
RERUN_FACTOR = 10.0  # a pair may differ by at most this times the device's GRPO-vs-GRPO difference


def deterministic(device: torch.device) -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn, do not raise: we record which op warned
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n].double() - b[n].double()).abs().max().item() for n in a)


def verdict(diff: float, noise: float) -> str:
    if diff == 0.0:
        return "bit-identical"
    if noise > 0.0 and diff <= RERUN_FACTOR * noise:
        return f"within {RERUN_FACTOR:g}x rerun noise"
    return "FAIL"


def _cpu_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------------------------- native trainer
def native_runs(device: torch.device, tiny: bool, out: Path) -> dict[str, dict[str, torch.Tensor]]:
    from sfpo.config import load_config
    from sfpo.trainer import Trainer
    from tiny import ToyTask, make_model, make_tokenizer

    shape = (["rollout.num_prompts=4", "rollout.group_size=4", "rollout.max_new_tokens=4"] if tiny else
             ["rollout.num_prompts=16", "rollout.group_size=8", "rollout.max_new_tokens=16"])
    base = shape + ["steps=3", "eval.every=0", "eval.num_prompts=1", "log.progress=false", "log.plot=false",
                    "log.tensorboard=false", "optim.lr=1e-2", "optim.mini_batches=2", "algorithm.switch=never",
                    "threads=1", "resume=false"]
    runs = {"grpo": ["algorithm.name=grpo"], "grpo_rerun": ["algorithm.name=grpo"],
            "sfpo_alpha0": ["algorithm.name=sfpo", "algorithm.alpha=0", f"algorithm.inner_steps={K}"],
            f"grpo_{K + 1}_passes": ["algorithm.name=grpo", f"algorithm.passes={K + 1}"],
            "sfpo_alpha1": ["algorithm.name=sfpo", "algorithm.alpha=1", f"algorithm.inner_steps={K}"],
            "sfpo_alpha0.8": ["algorithm.name=sfpo", "algorithm.alpha=0.8", f"algorithm.inner_steps={K}"]}
    weights = {}
    for name, overrides in runs.items():
        tok = make_tokenizer()
        model = make_model(tok, 0, *((32, 2) if tiny else (256, 4))).to(device)
        cfg = load_config(None, base + overrides + [f"output_dir={out / 'native' / name}"])
        trainer = Trainer(cfg, model=model, tokenizer=tok, task=ToyTask())
        trainer.train()
        weights[name] = _cpu_weights(trainer.model)
        trainer.writer.close()
    return weights


# ------------------------------------------------------------------------------------------------------- TRL
def trl_runs(device: torch.device, out: Path) -> dict[str, dict[str, torch.Tensor]]:
    from trl import GRPOConfig, GRPOTrainer

    from sfpo.integrations.trl import SFPOConfig, SFPOTrainer
    from tiny_trl import train

    # one training step = K+1 passes × 2 optimizer steps of 2 micro-steps (tests/integrations/test_trl.py)
    common = dict(max_steps=6, steps_per_generation=4, use_cpu=device.type == "cpu")
    runs = {"grpo": (GRPOTrainer, GRPOConfig, {}), "grpo_rerun": (GRPOTrainer, GRPOConfig, {}),
            "sfpo_alpha0": (SFPOTrainer, SFPOConfig, dict(alpha=0.0, lr_stepping="optimizer_step")),
            f"grpo_{K + 1}_passes": (GRPOTrainer, GRPOConfig, dict(num_iterations=K + 1)),
            "sfpo_alpha1": (SFPOTrainer, SFPOConfig, dict(inner_steps=K, alpha=1.0, lr_stepping="optimizer_step")),
            "sfpo_alpha0.8": (SFPOTrainer, SFPOConfig, dict(inner_steps=K, alpha=0.8,
                                                           lr_stepping="optimizer_step"))}
    return {name: _cpu_weights(train(cls, cfg, out / "trl" / name, **common, **extra).model)
            for name, (cls, cfg, extra) in runs.items()}


def compare(weights: dict[str, dict[str, torch.Tensor]]) -> dict:
    noise = max_diff(weights["grpo"], weights["grpo_rerun"])
    pairs = {"alpha0_vs_grpo": max_diff(weights["sfpo_alpha0"], weights["grpo"]),
             f"alpha1_vs_grpo_{K + 1}_passes": max_diff(weights["sfpo_alpha1"], weights[f"grpo_{K + 1}_passes"])}
    control = max_diff(weights["sfpo_alpha0.8"], weights[f"grpo_{K + 1}_passes"])
    checks = {name: {"max_abs_diff": d, "verdict": verdict(d, noise)} for name, d in pairs.items()}
    return {"rerun_noise": noise, "control_alpha0.8_vs_grpo_passes": control, "checks": checks,
            "ok": all(c["verdict"] != "FAIL" for c in checks.values()) and control > 0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the JSON file to write")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tests' 2-layer model (default on GPU: 4 layers, d=256)")
    p.add_argument("--budget-s", type=float, default=90.0, help="skip TRL's runs if the native ones used this up")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    deterministic(device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "deterministic": True, "tf32": False, "K": K,
              "rule": f"bit-identical, or within {RERUN_FACTOR:g}x the device's GRPO rerun difference where that is "
                      "not 0; control: SFPO α=0.8 must differ"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, runner in (("native", lambda: native_runs(device, args.tiny, Path(tmp))),
                             ("trl", lambda: trl_runs(device, Path(tmp)))):
            start = time.perf_counter()
            if start - t0 > args.budget_s:
                result[name] = {"skipped": f"budget ({start - t0:.0f} s of {args.budget_s:.0f} s used)"}
                continue
            if name == "trl":
                try:
                    import trl  # noqa: F401
                except ImportError as e:
                    result[name] = {"skipped": f"trl not installed ({e})"}
                    continue
            result[name] = {**compare(runner()), "seconds": time.perf_counter() - start}
        nondeterministic = sorted({str(w.message).split("\n")[0][:200] for w in caught
                                   if "deterministic" in str(w.message)})
    result["nondeterministic_ops"] = nondeterministic
    result["ok"] = all(result[n].get("ok", True) for n in ("native", "trl"))
    result["total_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for name in ("native", "trl"):
        r = result[name]
        if "checks" in r:
            print(f"{name:<7} rerun noise {r['rerun_noise']:.1e}, control {r['control_alpha0.8_vs_grpo_passes']:.1e}: "
                  + "; ".join(f"{k} {c['verdict']} ({c['max_abs_diff']:.1e})" for k, c in r["checks"].items()))
        else:
            print(f"{name:<7} {r['skipped']}")
    print(json.dumps({k: result[k] for k in ("device", "ok", "total_s", "nondeterministic_ops")}))
    return result


if __name__ == "__main__":
    main()
