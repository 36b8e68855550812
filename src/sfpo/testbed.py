"""The CPU testbed policy: a tiny Qwen2ForCausalLM with a character tokenizer, warm-started by supervised
learning on a task's worked solutions, saved like any model and cached on disk; the default policies of
arithmetic and countdown ship with the package (``SHIPPED_DIR``), so every machine starts from the same bits.

The warm-start is deliberately short: it should leave the policy able to solve some problems (pass@8 high) but
unreliably (pass@1 well below what RL reaches), which is where RL has something to do. Nothing here is RL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch

__all__ = ["CHARS", "SIZES", "WARM_START", "SHIPPED_DIR", "KERNEL_KNOBS", "build_tokenizer", "testbed_config",
           "warm_start", "default_cache_dir", "cache_key", "shipped_sums", "file_sha256", "weights_sha256"]

logger = logging.getLogger(__name__)

CHARS = "0123456789+-*=,: "
"""Every character a procedural task writes; the tokenizer has one token for each, after <pad> (0) and <eos> (1)."""
FORMAT_VERSION = 2  # bump when anything below changes what a cached policy contains
SIZES = {
    # ~1M parameters: what ENVIRONMENT.md found learnable in ~2 min on 2 cores
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8),
}
WARM_START = dict(steps=1500, batch_size=128, lr=1e-3, stop_at=0.3)
"""Defaults of ``warm_start``. ``steps`` is a ceiling: training stops once pass@1 on held-out train problems reaches
``stop_at``, because a fixed step count lands anywhere: arithmetic learns its carries in a sudden jump whose timing
moves with the seed and even the thread count (600 fixed steps gave validation pass@1 0.42 on 2 threads, 0.07 on
one). How fast RL then learns varies as much between policies of equal pass@1 (2-core CPU, 2026-11-30; GRPO as in
configs/demo.yaml of the time (lr 1e-4), one thread, validation avg@4 on 256 prompts at step 0 -> step 60 of RL):

| warm-start (arithmetic, seed 0)          | stopped at  | RL step 0 -> 60 |
|------------------------------------------|-------------|-----------------|
| lr 1e-3, cosine to 1500, stop_at 0.3     | 650 (143 s) | 0.348 -> 0.478 (0.506 at 55) |
| lr 1e-3, cosine to 1000, stop_at 0.3     | 780 (170 s) | 0.276 -> 0.216 (0.155 at 5)  |
| lr 3e-3, cosine to 1000, stop_at 0.3     | 800 (175 s) | 0.294 -> 0.328; 0.366 at 150 |
| lr 3e-3, cosine to 1000, stop_at 0.45    | 940 (279 s) | 0.438 -> 0.498               |
| lr 3e-3, stop_at 0.2, then 100 steps of lr falling to 0 | 830 | 0.346 -> 0.319    |
| lr 3e-3, stop_at 0.1, then 100 steps of lr falling to 0 | 780 | 0.270 -> 0.260    |
| lr 3e-3, all 1000 steps                  | 1000        | 0.905 (no headroom) |

The first row is the default: the policy RL improved fastest from, one sample per setting (GRPO from the third
row's policy at lr 3e-4 / 1e-3 collapsed to 0.15 / 0.00 within 5 steps)."""
_WARMUP = 50  # linear lr warmup steps, then cosine decay to _FINAL_LR of the peak at ``steps``
_FINAL_LR = 0.1
# held-out train problems sampled at temperature 1 every 50 steps, every 10 once a third of the way to stop_at:
# arithmetic went from pass@1 0.09 to 0.53 within 100 steps, so a coarse probe overshot the target
_PROBE = dict(size=256, every=50, every_near=10)
_THREADS = 1  # see _single_thread
SHIPPED_DIR = Path(__file__).resolve().parent / "assets" / "testbed"
"""Warm-started policies that ship with the package, each in the folder ``warm_start`` would cache it under, and
``SHA256SUMS`` (``sha256sum -c`` format) over their files. Rebuild and compare: ``python -m sfpo.testbed``."""
KERNEL_KNOBS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
"""Environment variables that pick the CPU kernels torch runs, hence the weights a warm-start produces
(docs/reproduction.md, "Same bits on every machine"); those that are set enter the cache key."""


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


def testbed_config(tokenizer, size: str = "tiny"):
    """The ``Qwen2Config`` of the ``size`` preset (fp32, tied embeddings) for ``tokenizer``'s vocabulary."""
    from transformers import Qwen2Config

    if size not in SIZES:
        raise ValueError(f"unknown testbed size {size!r}; sizes: {sorted(SIZES)}")
    s = SIZES[size]
    return Qwen2Config(vocab_size=len(tokenizer), num_key_value_heads=s["num_attention_heads"],
                       max_position_embeddings=128, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=None, dtype="float32", **s)


def default_cache_dir() -> Path:
    """``$SFPO_CACHE_DIR/testbed``, or ``~/.cache/sfpo/testbed`` when the variable is unset."""
    return Path(os.environ.get("SFPO_CACHE_DIR", Path.home() / ".cache" / "sfpo")) / "testbed"


def cache_key(task_name: str, task_kwargs: dict, *, steps: int, batch_size: int, lr: float, stop_at: float | None,
              seed: int, size: str) -> str:
    """The JSON text of everything that changes the warm-started weights; its hash names the cache folder."""
    return json.dumps({"v": FORMAT_VERSION, "task": task_name, "kwargs": task_kwargs, "size": size,
                       "arch": SIZES.get(size), "chars": CHARS, "steps": steps, "batch": batch_size, "lr": lr,
                       "stop_at": stop_at, "schedule": [_WARMUP, _FINAL_LR], "probe": _PROBE, "seed": seed,
                       "threads": _THREADS, **_kernels()}, sort_keys=True)


def _kernels() -> dict:
    """The kernel-selecting variables that are set, under "kernels"; nothing when none is (the default build,
    so the keys, hence the cache and shipped folder names, of default builds stay as they were)."""
    knobs = {k: os.environ[k] for k in KERNEL_KNOBS if os.environ.get(k)}
    return {"kernels": knobs} if knobs else {}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(model) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes and bytes in name order): equal iff the loaded
    weights are bit-identical, whatever file they came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def shipped_sums() -> dict[str, str]:
    """{path relative to ``SHIPPED_DIR``: sha256} as recorded in ``SHA256SUMS`` (empty if nothing ships)."""
    sums = SHIPPED_DIR / "SHA256SUMS"
    if not sums.exists():
        return {}
    return {rel: digest for digest, rel in (ln.split(None, 1) for ln in sums.read_text().splitlines() if ln)}


@contextlib.contextmanager
def _single_thread():
    """Train on one intra-op thread, then restore the caller's setting.

    On a 2-core machine shared with other jobs, a 2-thread OpenMP team spin-waits at every barrier: one step of
    this model took 2.3-3.6 s with two threads against 0.21-0.4 s with one. A fixed thread count also keeps the
    reduction order, hence the cached weights, the same whatever the caller set.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tokenize(tokenizer, examples) -> list[tuple[list[int], int]]:
    """Each example as (prompt + solution + eos ids, prompt length).

    One vocabulary lookup per character, which is what the char-level tokenizer does (tests check they agree):
    the tokenizer's own batch call took seconds on 20k rows of a busy 2-core machine, this takes milliseconds.
    """
    vocab = tokenizer.get_vocab()
    return [([vocab[c] for c in ex.prompt + ex.solution] + [tokenizer.eos_token_id], len(ex.prompt))
            for ex in examples]


def _sft_batch(rows: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels; labels only on solution and eos (the prompt is given, not
    learned)."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (row, n_prompt) in enumerate(rows):
        t = torch.tensor(row)
        ids[i, :len(row)] = t
        labels[i, n_prompt:len(row)] = t[n_prompt:]
        mask[i, :len(row)] = 1
    return ids, mask, labels


def warm_start(task_name: str = "arithmetic", task_kwargs: dict | None = None, *, steps: int | None = None,
               batch_size: int | None = None, lr: float | None = None, stop_at: float | None = WARM_START["stop_at"],
               seed: int = 0, size: str = "tiny", cache_dir: str | Path | None = None, progress: bool = True,
               shipped: bool = True) -> Path:
    """The folder of the testbed policy warm-started on ``task_name``'s worked solutions (shipped, trained now, or
    reused).

    Trains at most ``steps`` steps (``steps``/``batch_size``/``lr`` default to ``WARM_START``), stopping early once
    pass@1 at temperature 1 on held-out train problems reaches ``stop_at`` (None: never). The folder lies under
    ``cache_dir`` (default ``default_cache_dir()``), named by a hash of ``cache_key``, and loads with
    ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained``; its ``sfpo_testbed.json`` records the settings and
    how training ended. Deterministic for a given seed on one machine, but the bits follow the CPU's kernels: so
    when the package ships a policy with exactly these settings (``SHIPPED_DIR``) and ``shipped`` is true, that
    read-only folder is returned instead. Torch's global RNG and thread count are left as they were.
    """
    from sfpo.tasks import get_task

    task_kwargs = dict(task_kwargs or {})
    steps = WARM_START["steps"] if steps is None else steps
    batch_size = WARM_START["batch_size"] if batch_size is None else batch_size
    lr = WARM_START["lr"] if lr is None else lr
    key_src = cache_key(task_name, task_kwargs, steps=steps, batch_size=batch_size, lr=lr, stop_at=stop_at, seed=seed,
                        size=size)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"{task_name}-{size}-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}"
    if shipped and (SHIPPED_DIR / path.name / "config.json").exists():
        logger.info("testbed policy: the shipped %s", SHIPPED_DIR / path.name)
        return SHIPPED_DIR / path.name
    if (path / "config.json").exists():
        logger.info("testbed policy: reusing %s", path)
        return path

    task = get_task(task_name, **task_kwargs)
    train = [ex for ex in task.examples("train") if ex.solution]
    n_probe = _PROBE["size"] if stop_at is not None else 0
    if len(train) <= n_probe:
        raise ValueError(f"task {task_name!r} has {len(train) or 'no'} worked solutions in its train split; the "
                         f"warm-start needs more than the {n_probe} it holds out to decide when to stop")
    tokenizer = build_tokenizer()
    unknown = set("".join(ex.prompt + ex.solution for ex in train)) - set(CHARS)
    if unknown:  # the tokenizer would map them to <pad> and the model would learn nonsense
        raise ValueError(f"task {task_name!r} writes characters the testbed tokenizer lacks: {sorted(unknown)}")
    # the probe problems are never trained on, so stopping on them measures generalisation, not memory
    probe, rows = train[len(train) - n_probe:], _tokenize(tokenizer, train[:len(train) - n_probe])

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _single_thread():
        model, record = _train(tokenizer, rows, steps=steps, batch_size=batch_size, lr=lr, seed=seed, size=size,
                               progress=progress, where=path, stop=_Probe(task, probe, tokenizer, stop_at, seed))
    record.update(settings=json.loads(key_src), seconds=round(time.perf_counter() - t0, 1))

    # written whole into a sibling folder, then renamed: an interrupted run never leaves a half cache behind
    from sfpo.policy import deepspeed_unimported

    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with deepspeed_unimported():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "sfpo_testbed.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        if not (path / "config.json").exists():  # else another process finished first: keep its copy
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("testbed policy: saved %s", path)
    return path


class _Probe:
    """Pass@1 at temperature 1 (one sample per problem) on held-out problems; ``done`` once it reaches
    ``stop_at``. Sampling is seeded per step, so where training stops is as deterministic as the training."""

    def __init__(self, task, examples, tokenizer, stop_at: float | None, seed: int) -> None:
        self.task, self.examples, self.tokenizer, self.stop_at, self.seed = task, examples, tokenizer, stop_at, seed
        self.last = 0.0
        self.max_new_tokens = max((len(ex.solution) for ex in examples), default=0) + 4  # room to overshoot

    def pass1(self, model, step: int) -> float:
        enc = self.tokenizer([ex.prompt for ex in self.examples], return_tensors="pt", padding=True,
                             add_special_tokens=False)
        torch.manual_seed(self.seed * 1_000_003 + step)  # the caller forked the RNG: training draws are untouched
        model.eval()
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                 eos_token_id=self.tokenizer.eos_token_id)
        model.train()
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return sum(self.task.reward(t, ex) for t, ex in zip(texts, self.examples)) / len(self.examples)

    def done(self, model, step: int) -> tuple[bool, float | None]:
        if self.stop_at is None:
            return False, None
        near = self.last >= self.stop_at / 3
        if step % _PROBE["every_near" if near else "every"]:
            return False, None
        self.last = self.pass1(model, step)
        return self.last >= self.stop_at, self.last


def _lr_factor(step: int, steps: int) -> float:
    warm = min(1.0, (step + 1) / _WARMUP)
    return warm * (_FINAL_LR + (1 - _FINAL_LR) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))


def _train(tokenizer, rows, *, steps: int, batch_size: int, lr: float, seed: int, size: str, progress: bool,
           where: Path, stop: _Probe):
    """Supervised fine-tuning from a seeded random init (AdamW, warmup + cosine lr, clip 1.0) until ``steps`` or
    ``stop``; returns the model and a record of how it ended."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(testbed_config(tokenizer, size))
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("testbed policy: warm-starting a %.2fM-parameter Qwen2 for at most %d steps (to be cached in %s)",
                n_params / 1e6, steps, where)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps))
    gen = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="warm-start", dynamic_ncols=True)
    model.train()
    t0 = time.perf_counter()
    loss, probe, step = torch.tensor(float("nan")), None, 0
    while step < steps:
        idx = torch.randint(len(rows), (batch_size,), generator=gen).tolist()
        ids, mask, labels = _sft_batch([rows[i] for i in idx], tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", probe=probe)
        finished, value = stop.done(model, step)
        if value is not None:
            probe = round(value, 3)
            logger.info("testbed policy: step %d/%d, loss %.3f, probe pass@1 %.3f, %.0f s", step, steps,
                        loss.item(), value, time.perf_counter() - t0)
        if finished:
            break
    if bar is not None:
        bar.close()
    reached = stop.stop_at is not None and probe is not None and probe >= stop.stop_at
    if probe is not None and not reached:  # no probe at all means steps below one interval: a deliberate smoke run
        logger.warning("testbed policy: probe pass@1 %s after all %d steps, below stop_at=%s; the policy may leave RL "
                       "little to build on (raise steps or lr)", probe, steps, stop.stop_at)
    logger.info("testbed policy: warm-start done after %d steps in %.0f s (loss %.3f, probe pass@1 %s)", step,
                time.perf_counter() - t0, loss.item(), probe)
    model.eval()
    return model, {"steps_trained": step, "probe_pass1": probe, "stopped_early": reached and step < steps,
                   "final_loss": round(loss.item(), 4), "parameters": n_params}


def _rebuild(argv: list[str] | None = None) -> int:
    """``python -m sfpo.testbed``: warm-start the shipped policies again here and compare their weights' sha256
    with ``SHA256SUMS`` (``--write`` ships the new ones instead)."""
    import argparse
    import tempfile

    p = argparse.ArgumentParser(prog="python -m sfpo.testbed", description=_rebuild.__doc__)
    p.add_argument("policies", nargs="*", default=["arithmetic:0", "countdown:0"], help="task:warm-start-seed")
    p.add_argument("--write", action="store_true", help=f"copy the rebuilt folders into {SHIPPED_DIR} and "
                                                        "rewrite SHA256SUMS")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sums, same = shipped_sums(), True
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.policies:
            task, _, seed = spec.partition(":")
            built = warm_start(task, seed=int(seed or 0), cache_dir=tmp, progress=False, shipped=False)
            digest = file_sha256(built / "model.safetensors")
            want = sums.get(f"{built.name}/model.safetensors")
            same &= digest == want
            print(f"{spec}: {built.name}/model.safetensors {digest} "
                  f"({'same as shipped' if digest == want else 'not shipped' if want is None else 'DIFFERS from ' + want})")
            if args.write:
                dest = SHIPPED_DIR / built.name
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(built, dest)
        if args.write:
            lines = [f"{file_sha256(f)}  {f.relative_to(SHIPPED_DIR)}" for f in sorted(SHIPPED_DIR.glob("*/*"))]
            (SHIPPED_DIR / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return 0 if same or args.write else 1


if __name__ == "__main__":
    raise SystemExit(_rebuild())
