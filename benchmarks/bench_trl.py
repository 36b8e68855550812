"""Training-step time and memory of TRL's GRPOTrainer, SFPOTrainer (K=3) and our own trainer: same tiny model, batch.

A training step is one generation batch: one pass for GRPO, K+1 passes for SFPO (switch off: every step is an
SFPO step), and K+1 plain passes for the same-optimizer-steps control; ``ours_grpo`` / ``ours_sfpo`` are the same
two updates through ``sfpo.trainer.Trainer`` (HF decode loop, no TRL). Each method runs in its own process
(so peak RSS is its own), methods take turns over ``--rounds`` so machine noise hits all alike, and the first
``--warmup`` steps of each process are not counted. Completions have a fixed length (EOS suppressed), so every
method pays for the same tokens. Memory: peak RSS of the process, the SFPO anchor's bytes, and the bytes of all
live tensors after the last step (a gc scan, storages counted once), whose difference between SFPO and GRPO is
the extra memory SFPO holds. Our trainer's GRPO keeps one weight copy too (``nan_guard``, on by default, restores
θ0 after a non-finite loss); TRL has no such guard. Besides wall time, the process CPU time per step is reported:
on a shared machine it is the steadier measure of the work (with ``--threads`` threads busy, wall ≈ CPU / threads
when nothing else runs).

    python benchmarks/bench_trl.py                      # 32 prompts × 8 samples, 16 tokens, 4 steps × 2 rounds
    python benchmarks/bench_trl.py --steps 10 --methods trl_grpo trl_sfpo
    python benchmarks/bench_trl.py --size small --methods trl_grpo trl_sfpo   # memory on a 6.3M model

Prints a table, then one JSON line. Another trainer joins by adding ``METHODS[name] = fn``: ``fn(setup)`` trains
``setup.warmup + setup.steps`` training steps of the same batch and returns
``{"step_s": [wall seconds per training step], "cpu_s": [CPU seconds per step], "rollout_s": [wall seconds in
generation per step], "anchor_bytes": int, "live_tensor_bytes": int, "params": int}``, the warm-up steps
dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Setup:
    prompts: int = 32  # per generation batch
    generations: int = 8  # completions per prompt
    tokens: int = 16  # completion length (fixed)
    optimizer_steps_per_pass: int = 4  # the paper's mini-batches per pass
    inner_steps: int = 3
    alpha: float = 0.8
    size: str = "tiny"  # sfpo.testbed size preset (tiny: 1.05M parameters, small: 6.3M), random init
    steps: int = 4
    warmup: int = 1
    threads: int = 2
    seed: int = 0


def _policy(setup: Setup):
    """(tokenizer, testbed Qwen2 of ``setup.size`` from a seeded random init), torch on ``setup.threads`` threads."""
    import torch
    from transformers import AutoModelForCausalLM

    from sfpo.testbed import build_tokenizer, testbed_config

    torch.set_num_threads(setup.threads)
    tok = build_tokenizer()
    torch.manual_seed(setup.seed)
    return tok, AutoModelForCausalLM.from_config(testbed_config(tok, setup.size))


def _trl_run(setup: Setup, sfpo: bool, passes: int, **overrides) -> dict:
    """Train with TRL (GRPOTrainer, or SFPOTrainer when ``sfpo``) and time every training step; ``overrides`` go
    to the trainer's config (e.g. a DeepSpeed config, benchmarks/bench_deepspeed.py)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sfpo.integrations.trl import SFPOConfig, SFPOTrainer
    from sfpo.tasks.arithmetic import ArithmeticTask

    tok, model = _policy(setup)
    completions = setup.prompts * setup.generations
    micro = completions // setup.optimizer_steps_per_pass  # one micro-step per optimizer step
    opt_steps_per_train_step = setup.optimizer_steps_per_pass * passes
    train_steps = setup.warmup + setup.steps
    common = dict(output_dir=tempfile.mkdtemp(prefix="bench_trl_"), per_device_train_batch_size=micro,
                  num_generations=setup.generations, steps_per_generation=setup.optimizer_steps_per_pass,
                  gradient_accumulation_steps=1, max_completion_length=setup.tokens,
                  generation_kwargs={"min_new_tokens": setup.tokens}, max_steps=train_steps * opt_steps_per_train_step,
                  learning_rate=1e-4, lr_scheduler_type="constant", bf16=False, gradient_checkpointing=False,
                  use_cpu=True, report_to="none", logging_steps=10**6, save_strategy="no", disable_tqdm=True,
                  seed=setup.seed)
    common.update(overrides)
    if sfpo:
        args = SFPOConfig(**common, inner_steps=setup.inner_steps, alpha=setup.alpha, switch="never")
        cls = SFPOTrainer
    else:
        args, cls = GRPOConfig(**common, num_iterations=passes), GRPOTrainer
    prompts = [ex.prompt for ex in ArithmeticTask().examples("train", setup.prompts * train_steps)]
    ends: list[tuple[float, float]] = []  # (wall, process CPU) at the end of each training step
    rollout: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ends.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % opt_steps_per_train_step == 0:
                ends.append((time.perf_counter(), time.process_time()))

    def ones_reward(completions, **kwargs):  # dense, so every group has non-zero advantages
        return [c.count("1") / setup.tokens for c in completions]

    trainer = cls(model=model, reward_funcs=ones_reward, args=args, processing_class=tok, callbacks=[Clock()],
                  train_dataset=Dataset.from_dict({"prompt": prompts}))
    generate = trainer._generate_and_score_completions

    def timed_generate(inputs):
        t0 = time.perf_counter()
        out = generate(inputs)
        rollout.append(time.perf_counter() - t0)
        return out

    trainer._generate_and_score_completions = timed_generate
    trainer.train()
    step_s = [b[0] - a[0] for a, b in zip(ends, ends[1:])]
    cpu_s = [b[1] - a[1] for a, b in zip(ends, ends[1:])]
    anchor = trainer.sfpo.extra_bytes() if sfpo else 0
    return {"step_s": step_s[setup.warmup:], "cpu_s": cpu_s[setup.warmup:], "rollout_s": rollout[setup.warmup:],
            "anchor_bytes": anchor, "live_tensor_bytes": live_tensor_bytes(),
            "params": sum(p.numel() for p in model.parameters())}


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage alive in this process (each storage once)."""
    import gc

    import torch

    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.device.type == "meta":
                continue
            storage = obj.untyped_storage()
        except (RuntimeError, ReferenceError):  # tensor subclasses without a storage
            continue
        if storage.data_ptr() and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


class _FixedLength:
    """The tokenizer as the HF engine sees it, with an EOS id no token has: every completion runs to the cap."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.eos_token_id = -1

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def _ours_run(setup: Setup, sfpo: bool) -> dict:
    """Train with ``sfpo.trainer.Trainer`` on the same model, batch and optimizer steps; time every step."""
    from sfpo.config import TrainConfig
    from sfpo.rollout.hf import HFEngine
    from sfpo.tasks.arithmetic import ArithmeticTask
    from sfpo.trainer import Trainer

    tok, model = _policy(setup)
    cfg = TrainConfig(seed=setup.seed, steps=setup.warmup + setup.steps, resume=False, threads=setup.threads,
                      output_dir=tempfile.mkdtemp(prefix="bench_ours_"))
    cfg.algorithm.name = "sfpo" if sfpo else "grpo"
    cfg.algorithm.inner_steps, cfg.algorithm.alpha, cfg.algorithm.switch = setup.inner_steps, setup.alpha, "never"
    cfg.rollout.num_prompts, cfg.rollout.group_size = setup.prompts, setup.generations
    cfg.rollout.max_new_tokens = setup.tokens
    cfg.optim.mini_batches = setup.optimizer_steps_per_pass
    cfg.eval.every = 0
    cfg.log.tensorboard = cfg.log.progress = cfg.log.plot = False
    trainer = Trainer(cfg, model=model, tokenizer=tok, task=ArithmeticTask())
    # the engine also stops on the generation config's EOS list (instruct models' end-of-turn tokens): clear it, or
    # completions end early and the methods no longer pay for the same tokens
    model.generation_config.eos_token_id = None
    trainer.engine = HFEngine(model, _FixedLength(tok))
    step_s, cpu_s, rollout = [], [], []
    for _ in range(cfg.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = trainer.train_step()
        step_s.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - c0)
        rollout.append(metrics["time/rollout"])
        trainer.step += 1
    assert metrics["completion_length"] == setup.tokens, metrics["completion_length"]
    trainer.writer.close()
    return {"step_s": step_s[setup.warmup:], "cpu_s": cpu_s[setup.warmup:], "rollout_s": rollout[setup.warmup:],
            "anchor_bytes": trainer.update.extra_bytes(), "live_tensor_bytes": live_tensor_bytes(),
            "params": sum(p.numel() for p in model.parameters())}


def trl_grpo(setup: Setup) -> dict:
    return _trl_run(setup, sfpo=False, passes=1)


def trl_sfpo(setup: Setup) -> dict:
    return _trl_run(setup, sfpo=True, passes=setup.inner_steps + 1)


def trl_grpo_passes(setup: Setup) -> dict:
    """GRPO with K+1 passes per batch (num_iterations=K+1): SFPO's optimizer steps without the reposition."""
    return _trl_run(setup, sfpo=False, passes=setup.inner_steps + 1)


def ours_grpo(setup: Setup) -> dict:
    return _ours_run(setup, sfpo=False)


def ours_sfpo(setup: Setup) -> dict:
    return _ours_run(setup, sfpo=True)


METHODS = {"trl_grpo": trl_grpo, "trl_sfpo": trl_sfpo, "trl_grpo_passes": trl_grpo_passes, "ours_grpo": ours_grpo,
           "ours_sfpo": ours_sfpo}


def worker(name: str, setup: Setup) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    result = METHODS[name](setup)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(result))


def run_worker(name: str, setup: Setup) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--setup", json.dumps(asdict(setup))]
    env = {**os.environ, "OMP_NUM_THREADS": str(setup.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--rounds", type=int, default=2, help="processes per method, run in turn")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    for key, value in asdict(Setup()).items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, Setup(**json.loads(args.setup)))
    setup = Setup(**{k: getattr(args, k) for k in asdict(Setup())})
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for _ in range(args.rounds):
        for name in args.methods:
            runs[name].append(run_worker(name, setup))

    import torch
    import trl

    rows = {}
    for name, rs in runs.items():
        rows[name] = {"step_s": statistics.median(t for r in rs for t in r["step_s"]),
                      "cpu_s": statistics.median(t for r in rs for t in r["cpu_s"]),
                      "rollout_s": statistics.median(t for r in rs for t in r["rollout_s"]),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                      "live_tensor_mb": statistics.median(r["live_tensor_bytes"] for r in rs) / 2**20,
                      "anchor_mb": rs[0]["anchor_bytes"] / 2**20, "params": rs[0]["params"]}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"testbed Qwen2 '{setup.size}' ({rows[args.methods[0]]['params'] / 1e6:.2f}M params, random init); "
          f"{setup.prompts} prompts × {setup.generations} completions × {setup.tokens} tokens per training step; "
          f"{setup.optimizer_steps_per_pass} optimizer steps per pass; K={setup.inner_steps}; {setup.steps} steps × "
          f"{args.rounds} rounds per method (medians); torch {torch.__version__}, trl {trl.__version__}, "
          f"{setup.threads} threads, {platform.machine()}, {os.cpu_count()} CPUs, commit {commit}")
    base = rows.get("trl_grpo")
    print("| method | step s (wall) | × TRL GRPO | step CPU s | × TRL GRPO | rollout s (wall) | peak RSS MB "
          "| live tensors MB | anchor MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        wall = f"{r['step_s'] / base['step_s']:.2f}" if base else "-"
        cpu = f"{r['cpu_s'] / base['cpu_s']:.2f}" if base else "-"
        print(f"| {name} | {r['step_s']:.3f} | {wall} | {r['cpu_s']:.3f} | {cpu} | {r['rollout_s']:.3f} | "
              f"{r['peak_rss_mb']:.0f} | {r['live_tensor_mb']:.2f} | {r['anchor_mb']:.2f} |")
    summary = {f"{name}_{key}": value for name, r in rows.items() for key, value in r.items() if key != "params"}
    summary["params"] = rows[args.methods[0]]["params"]

    def ratio(key: str, a: str, b: str, field: str = "step_s") -> None:
        if a in rows and b in rows:
            summary[key] = rows[a][field] / rows[b][field]

    ratio("trl_sfpo_over_trl_grpo", "trl_sfpo", "trl_grpo")
    ratio("trl_sfpo_over_trl_grpo_cpu", "trl_sfpo", "trl_grpo", "cpu_s")
    ratio("trl_grpo_passes_over_trl_grpo", "trl_grpo_passes", "trl_grpo")
    ratio("ours_sfpo_over_ours_grpo", "ours_sfpo", "ours_grpo")
    ratio("ours_grpo_over_trl_grpo", "ours_grpo", "trl_grpo")
    ratio("ours_sfpo_over_trl_sfpo", "ours_sfpo", "trl_sfpo")
    if base and "trl_sfpo" in rows:
        summary["trl_sfpo_extra_live_mb"] = rows["trl_sfpo"]["live_tensor_mb"] - base["live_tensor_mb"]
        summary["trl_sfpo_extra_rss_mb"] = rows["trl_sfpo"]["peak_rss_mb"] - base["peak_rss_mb"]
        summary["trl_sfpo_extra_over_params"] = rows["trl_sfpo"]["anchor_mb"] * 2**20 / (4 * summary["params"])
    summary.update(asdict(setup), rounds=args.rounds, commit=commit)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
