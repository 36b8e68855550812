"""One command that proves the CUDA path on a single NVIDIA GPU in minutes, offline, before any real run.

Builds a Qwen2.5-0.5B-shaped Qwen2 from a config (random init; no download) with a locally built 151,936-token
word-level tokenizer, and runs GRPO and SFPO (K=3, α=0.8) steps through ``sfpo.trainer.Trainer`` at a scaled-down
paper shape (64 prompts × 8 responses × 512 new tokens, 4 mini-batches, token-budget micro-batches) in each of:
fp32 (TF32 matmuls), bf16 mixed precision, bf16 mixed precision + activation checkpointing (all three with the
chunked output head, the default), and the last with full (B, T, V) logits instead. Prints per-phase step
times, peak GPU memory, update-phase MFU against the GPU's bf16 dense peak and the SFPO/GRPO step-time ratio,
then ONE JSON line; writes gpu_check.json and gpu_check.txt into the folder given.

    python benchmarks/gpu_check.py OUT_DIR                      # on the GPU; ≈5-7 min on an H100/H200 (estimate)
    python benchmarks/gpu_check.py OUT_DIR --device cpu --tiny  # the same code path on CPU in seconds (rehearsal)

Needs torch and transformers only (tested: torch 2.13 + transformers 5.24 on CPU; written for torch 2.11 +
transformers 5.17): no trl, vLLM, math-verify, datasets, peft or matplotlib. A run that fails (e.g. out of
memory) is recorded with its error and the others go on; ``--budget-s`` skips what would not finish in time.
The first step of every run is warm-up (CUDA kernels, allocator); the table reports the last step.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from sfpo.config import load_config  # noqa: E402
from sfpo.tasks.base import Example  # noqa: E402
from sfpo.trainer import Trainer  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; matched on the device name
BF16_PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0), ("GH200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
                    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0)]

# Qwen2.5-0.5B's architecture (its config.json), random weights
FULL_MODEL = dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY_MODEL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True)
FULL_SHAPE = dict(prompts=64, group=8, new_tokens=512, prompt_tokens=128, micro_batch_tokens=8192, steps=2)
TINY_SHAPE = dict(prompts=4, group=2, new_tokens=8, prompt_tokens=12, micro_batch_tokens=64, steps=2)
# every variant but the last computes log-probs through the chunked output head (model.head_chunk_tokens, its
# default); the last is bf16+ckpt with the model's full (B, T, V) logits, to measure what the chunking saves
VARIANTS = {"fp32": dict(mixed_precision="none", checkpointing=False),
            "bf16": dict(mixed_precision="bf16", checkpointing=False),
            "bf16+ckpt": dict(mixed_precision="bf16", checkpointing=True),
            "bf16+ckpt+full-logits": dict(mixed_precision="bf16", checkpointing=True, head_chunk_tokens=0)}
PHASES = ["time/rollout", "time/reward", "time/old_logprobs", "time/update", "time/step"]


@functools.lru_cache(maxsize=1)
def word_tokenizer(vocab_size: int):
    """Word-level tokenizer over "w0 w1 ...": every id is a word, so any sampled id decodes; pad 0, eos 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", padding_side="left")


class ShapeTask:
    """Prompts of ``prompt_tokens``/2 .. ``prompt_tokens`` random words (so lengths vary, as real prompts do) and a
    reward that is a fixed pseudo-random function of the completion: non-zero advantages, no verifier process."""

    name = "gpu-check"

    def __init__(self, prompt_tokens: int, vocab_size: int, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.rows = []
        for i in range(n):
            length = int(torch.randint(prompt_tokens // 2, prompt_tokens + 1, (), generator=g))
            words = torch.randint(2, vocab_size, (length,), generator=g).tolist()
            self.rows.append(Example(" ".join(f"w{w}" for w in words), "0", id=f"gpu-check-{i}"))

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        return list(self.rows if n is None else self.rows[:n])

    def reward(self, completion: str, example: Example) -> float:
        return int(hashlib.sha256(completion.encode()).hexdigest()[:8], 16) / 2**32


def build_model(model_cfg: dict, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**model_cfg, eos_token_id=1, pad_token_id=0)
    with torch.device(device):  # initialise on the device directly: no CPU copy of the weights
        model = Qwen2ForCausalLM(cfg)
    return model.float().train()  # fp32 masters whatever the config default dtype


def update_flops(model_cfg: dict, n_params: int, prompt_lens: list[int], group: int, completion_len: float,
                 passes: int) -> float:
    """Model FLOPs of the update phase (checkpointing's recompute not counted, as MFU does): 6·N per token for the
    non-embedding weights, 6·V·d per response token for the tied LM head, 6·L·d·len² per sequence for causal
    attention, times the passes over the batch. Response lengths taken as their mean."""
    d, layers, vocab = model_cfg["hidden_size"], model_cfg["num_hidden_layers"], model_cfg["vocab_size"]
    dense = n_params - vocab * d
    tokens = sum(p + completion_len for p in prompt_lens) * group
    attention = sum((p + completion_len) ** 2 for p in prompt_lens) * group * 6 * layers * d
    head = 6 * vocab * d * completion_len * len(prompt_lens) * group
    return passes * (6 * dense * tokens + head + attention)


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return platform.processor() or "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((tf for key, tf in BF16_PEAK_TFLOPS if key in name), None)


def run_one(variant: str, algo: str, args, shape: dict, model_cfg: dict, out: Path) -> dict:
    v = VARIANTS[variant]
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(model_cfg, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    tok = word_tokenizer(model_cfg["vocab_size"])
    task = ShapeTask(shape["prompt_tokens"], model_cfg["vocab_size"], shape["prompts"] * (shape["steps"] + 1))
    overrides = [
        f"output_dir={out / 'runs' / f'{variant}_{algo}'}", f"steps={shape['steps']}", "resume=false",
        f"model.mixed_precision={v['mixed_precision']}", f"model.gradient_checkpointing={v['checkpointing']}",
        *([f"model.head_chunk_tokens={v['head_chunk_tokens']}"] if "head_chunk_tokens" in v else []),
        f"rollout.num_prompts={shape['prompts']}", f"rollout.group_size={shape['group']}",
        f"rollout.max_new_tokens={shape['new_tokens']}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        f"algorithm.name={algo}", "algorithm.inner_steps=3", "algorithm.alpha=0.8", "algorithm.switch=never",
        "algorithm.entropy_coef=0.001", "algorithm.clip_ratio_c=3.0",
        "optim.lr=1e-6", "optim.weight_decay=0.01", "optim.mini_batches=4",
        f"optim.micro_batch_tokens={shape['micro_batch_tokens']}",
        "eval.every=0", "eval.num_prompts=1", "log.progress=false", "log.plot=false", "log.tensorboard=false",
    ]
    trainer = Trainer(load_config(None, overrides), model=model, tokenizer=tok, task=task)
    steps = []
    for _ in range(shape["steps"]):
        steps.append(trainer.train_step())
        trainer.step += 1
    last = steps[-1]
    passes = 4 if algo == "sfpo" else 1
    prompt_lens = [len(tok(ex.prompt)["input_ids"]) for ex in trainer._step_examples(trainer.step - 1)]
    flops = update_flops(model_cfg, n_params, prompt_lens, shape["group"], last["completion_length"], passes)
    result = {"variant": variant, "algorithm": algo, "params": n_params,
              **{k: last[k] for k in PHASES}, "warmup_step_s": steps[0]["time/step"],
              "completion_length": last["completion_length"], "padding_frac": last["padding/frac"],
              "loss": last["loss"], "update_tflop": flops / 1e12,
              "update_tflops_per_s": flops / 1e12 / last["time/update"]}
    result.update({k: last[k] for k in ("time/fast", "time/reposition", "time/slow") if k in last})
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainer.writer.close()
    del trainer, model
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for gpu_check.json, gpu_check.txt and the runs' metrics")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for the rehearsal")
    p.add_argument("--tiny", action="store_true", help="a tiny model and shape: the whole path in seconds")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (default 64; --tiny 4)")
    p.add_argument("--new-tokens", type=int, default=None, help="response length (default 512; --tiny 8)")
    p.add_argument("--group", type=int, default=None, help="responses per prompt (default 8; --tiny 2)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="longest prompt (default 128; --tiny 12)")
    p.add_argument("--steps", type=int, default=None, help="steps per run, the first is warm-up (default 2)")
    p.add_argument("--budget-s", type=float, default=450.0, help="skip runs that would end after this (default "
                                                                 "450 s, inside the 8 minutes)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of the GPU if not in the table")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False (use --device cpu --tiny to rehearse)")
    shape = dict(TINY_SHAPE if args.tiny else FULL_SHAPE)
    for key, value in (("prompts", args.prompts), ("new_tokens", args.new_tokens), ("steps", args.steps),
                       ("group", args.group), ("prompt_tokens", args.prompt_tokens)):
        if value is not None:
            shape[key] = value
    if shape["steps"] < 1:
        p.error("--steps must be >= 1")
    model_cfg = TINY_MODEL if args.tiny else FULL_MODEL
    variants = [x for x in args.variants.split(",") if x]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # the fp32 run uses TF32 tensor cores, as docs/gpu.md says
    args.out.mkdir(parents=True, exist_ok=True)
    gpu, peak = bf16_peak(device)
    peak = args.peak_tflops or peak

    runs, last_cost = [], 0.0
    for variant in variants:
        for algo in ("grpo", "sfpo"):
            elapsed = time.perf_counter() - t_start
            # an SFPO run costs about 2.5 GRPO runs (4 passes instead of 1, one rollout each)
            estimate = last_cost * (2.5 if algo == "sfpo" else 0.4)
            if elapsed + estimate > args.budget_s:
                runs.append({"variant": variant, "algorithm": algo, "skipped": f"budget ({elapsed:.0f} s used, "
                                                                             f"≈{estimate:.0f} s more needed)"})
                continue
            t0 = time.perf_counter()
            try:
                runs.append(run_one(variant, algo, args, shape, model_cfg, args.out))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # record it; the other runs still tell a lot
                runs.append({"variant": variant, "algorithm": algo, "error": f"{type(e).__name__}: {e}"[:500]})
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            last_cost = time.perf_counter() - t0
            # the runs so far, in case this process is killed before the end (benchmarks/gpu/run_all.py's deadline)
            (args.out / "gpu_check.json").write_text(json.dumps({"gpu": gpu, "partial": True, "shape": shape,
                                                                 "runs": runs}, indent=2))
    for r in runs:
        if "update_tflops_per_s" in r and peak:
            r["update_mfu"] = r["update_tflops_per_s"] / peak
    ratios = {}
    for variant in variants:
        g, s = (next((r for r in runs if r["variant"] == variant and r["algorithm"] == a and "time/step" in r), None)
                for a in ("grpo", "sfpo"))
        if g and s:
            ratios[variant] = {"step": s["time/step"] / g["time/step"], "update": s["time/update"] / g["time/update"]}

    import transformers

    lines = [f"gpu_check: {gpu} | torch {torch.__version__} | transformers {transformers.__version__} | "
             f"model {runs[0].get('params', 0) / 1e6:.1f}M params (random init) | {shape['prompts']} prompts × "
             f"{shape['group']} × {shape['new_tokens']} new tokens | bf16 peak {peak} TFLOP/s",
             f"{'run':<21}{'rollout':>9}{'old_lp':>8}{'update':>9}{'step':>9}{'warmup':>8}{'peak GB':>9}"
             f"{'TFLOP/s':>9}{'MFU':>7}{'pad':>6}"]
    for r in runs:
        name = f"{r['variant']} {r['algorithm']}"
        if "time/step" not in r:
            lines.append(f"{name:<21} {r.get('skipped') or r.get('error')}")
            continue
        mfu = f"{100 * r['update_mfu']:.1f}%" if "update_mfu" in r else "-"
        gb = f"{r['peak_gpu_gb']:.1f}" if "peak_gpu_gb" in r else f"{r['peak_rss_gb']:.1f}*"
        lines.append(f"{name:<21}{r['time/rollout']:>9.2f}{r['time/old_logprobs']:>8.2f}{r['time/update']:>9.2f}"
                     f"{r['time/step']:>9.2f}{r['warmup_step_s']:>8.1f}{gb:>9}{r['update_tflops_per_s']:>9.3g}"
                     f"{mfu:>7}{r['padding_frac']:>6.2f}")
    lines.append("seconds per step (last step; warmup = the first); peak GB = torch.cuda.max_memory_allocated "
                 "(* = process RSS on CPU); MFU = update-phase model FLOPs / time / bf16 peak")
    lines += [f"SFPO/GRPO {v}: step {x['step']:.2f}x, update {x['update']:.2f}x" for v, x in ratios.items()]
    total = time.perf_counter() - t_start
    lines.append(f"total {total:.0f} s")
    summary = {"gpu": gpu, "device": args.device, "tiny": args.tiny, "torch": torch.__version__,
               "transformers": transformers.__version__, "shape": shape, "bf16_peak_tflops": peak,
               "sfpo_over_grpo": ratios, "total_s": total,
               "ok": all("time/step" in r for r in runs), "runs": runs}
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    (args.out / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: summary[k] for k in ("gpu", "ok", "total_s", "sfpo_over_grpo")}
                     | {"runs": [{k: r.get(k) for k in ("variant", "algorithm", "time/step", "time/update",
                                                         "peak_gpu_gb", "update_mfu", "error", "skipped")}
                                 for r in runs]}))
    return summary


if __name__ == "__main__":
    main()
