"""The CPU testbed policy: a tiny Qwen2ForCausalLM with a character tokenizer, warm-started by supervised
learning on a task's worked solutions, saved like any model and cached on disk.

The warm-start is deliberately short: it should leave the policy able to solve some problems (pass@8 high) but
unreliably (pass@1 well below what RL reaches), which is where RL has something to do. Nothing here is RL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

__all__ = ["CHARS", "build_tokenizer", "model_config", "warm_start", "SIZES", "cache_dir"]

logger = logging.getLogger(__name__)

CHARS = "0123456789+-*=,: "
FORMAT_VERSION = 1  # bump when anything below changes what a cached policy contains
SIZES = {
    # ~0.8M parameters: what ENVIRONMENT.md found learnable in ~2 min on 2 cores
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8),
}
WARM_START = dict(steps=600, batch_size=128, lr=1e-3)


def build_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` (pad id 0, eos id 1, left padding) over ``CHARS``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # every character is a token
    tk.decoder = decoders.Fuse()  # and decoding joins them back without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", padding_side="left",
                                   model_max_length=256)


def model_config(tokenizer, size: str = "tiny"):
    from transformers import Qwen2Config

    if size not in SIZES:
        raise ValueError(f"unknown testbed size {size!r}; sizes: {sorted(SIZES)}")
    s = SIZES[size]
    return Qwen2Config(vocab_size=len(tokenizer), num_key_value_heads=s["num_attention_heads"],
                       max_position_embeddings=128, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **s)


def cache_dir() -> Path:
    return Path(os.environ.get("SFPO_CACHE_DIR", Path.home() / ".cache" / "sfpo")) / "testbed"


def _sft_batch(tokenizer, examples, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+solution+eos; labels only on solution and eos (the prompt is given, not learned)."""
    rows, labels = [], []
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(ex.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, :len(r)], lab[i, :len(l)], mask[i, :len(r)] = torch.tensor(r), torch.tensor(l), 1
    return ids.to(device), mask.to(device), lab.to(device)


def warm_start(task_name: str = "arithmetic", task_kwargs: dict | None = None, *, steps: int | None = None,
               batch_size: int | None = None, lr: float | None = None, seed: int = 0, size: str = "tiny",
               cache: str | Path | None = None, progress: bool = True) -> Path:
    """The folder of the warm-started testbed policy (trained now, or reused from the cache)."""
    from transformers import AutoModelForCausalLM

    from sfpo.tasks import get_task

    task_kwargs = dict(task_kwargs or {})
    steps = WARM_START["steps"] if steps is None else steps
    batch_size = batch_size or WARM_START["batch_size"]
    lr = lr or WARM_START["lr"]
    key_src = json.dumps({"v": FORMAT_VERSION, "task": task_name, "kwargs": task_kwargs, "size": size,
                          "steps": steps, "batch": batch_size, "lr": lr, "seed": seed}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    root = Path(cache) if cache is not None else cache_dir()
    path = root / f"{task_name}-{size}-{key}"
    if (path / "config.json").exists():
        logger.info("testbed policy: reusing %s", path)
        return path

    task = get_task(task_name, **task_kwargs)
    train = [ex for ex in task.examples("train") if ex.solution]
    if not train:
        raise ValueError(f"task {task_name!r} has no worked solutions to warm-start from")
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(tokenizer, size))
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("testbed policy: warm-starting a %.2fM-parameter Qwen2 on %s for %d steps (cached afterwards in %s)",
                n_params / 1e6, task_name, steps, path)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    gen = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="warm-start", dynamic_ncols=True)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(train), (batch_size,), generator=gen).tolist()
        ids, mask, labels = _sft_batch(tokenizer, [train[i] for i in idx], "cpu")
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    logger.info("testbed policy: warm-start done in %.0f s (final loss %.3f)", time.perf_counter() - t0, loss.item())

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "sfpo_testbed.json").write_text(key_src)
    if (path / "config.json").exists():  # another process finished first; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return path
