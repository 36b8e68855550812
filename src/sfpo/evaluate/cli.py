"""``sfpo eval``: avg@k and unbiased pass@k of checkpoints on several benchmarks, per benchmark and macro average.

Takes model folders, LoRA adapter folders, hub names or run folders (their ``checkpoints/step_*`` and ``best/``),
reports each run's last checkpoint and its best one together with the split that selected it, and writes
``eval.json`` and ``eval.md``. A finished (checkpoint, benchmark, settings) result is stored in ``eval.json`` and
never recomputed. Sampling and scoring are ``sfpo.evaluate``'s; this module only plans, runs and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from sfpo.evaluate.checkpoints import Checkpoint, discover_checkpoints
from sfpo.evaluate.report import build_report, metrics, render_markdown, summary_line
from sfpo.evaluate.specs import Job, build_jobs, has_split, load_tasks_file, parse_task_spec
from sfpo.evaluate.store import EvalSettings, ResultStore, result_key

__all__ = ["EVAL_DESCRIPTION", "EVAL_EPILOG", "add_eval_args", "evaluate_checkpoints", "run_eval"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 2048

EVAL_DESCRIPTION = """\
Score checkpoints with avg@k (mean accuracy of k samples per prompt; pass@1 estimated with k samples) and unbiased
pass@j from the same k samples, per benchmark and as the macro average over benchmarks. A completion is correct
when the task's reward is 1.0 (the paper's 0.1 for a boxed wrong answer does not count)."""

EVAL_EPILOG = """\
benchmarks:
  --task NAME[:KEY=VALUE[,KEY=VALUE...]]      repeat for each benchmark
      NAME is a registered task (arithmetic, countdown, gsm8k, math, math-500, aime24, aime25, amc23, minerva,
      olympiadbench, dapo-math-17k, math-dataset). Each KEY=VALUE is a task option (its value read as YAML, so
      numbers, lists and {a: b} mappings work; commas inside [] or {} are fine), except three evaluation options:
        split=SPLIT        this benchmark's split (default: --split)
        num_prompts=N      its first N prompts (default: --num-prompts)
        label=TEXT         its name in the report (default: the task's own name)
      e.g.  --task math-500  --task aime24:data_files=/data/aime24.jsonl
            --task math-dataset:data_files={test: /d/ob.jsonl},columns={question: q, answer: a},name=ob
  --tasks-file FILE.yaml                      the same in YAML, for long options such as a prompt template:
      common: {template: "{question} ...", chat_template: Qwen/Qwen2.5-Math-1.5B}   # options for every task
      tasks:                                  # the benchmarks
        - {task: math-500}
        - {task: aime24, num_prompts: 30}
      select:                                 # optional: the selection set (as --select-task)
        - {task: dapo-math-17k, split: validation, num_prompts: 500}

selecting the best checkpoint of a run:
  best = highest macro avg@k over the selection set; ties go to the earlier checkpoint.
  The selection set is --select-task (default split --select-split), or else every benchmark that has a
  --select-split split. Default --select-split validation: with math-500 & co (test only) and no --select-task
  there is nothing to select on, so only the last checkpoint is reported: pass the training task (same options as
  in training, so its validation rows are the ones held out of its train split), e.g.
  --select-task dapo-math-17k:num_prompts=500. --select-split test selects on the reported test sets, as the
  paper did; the report then says that the best checkpoint's numbers are optimistic.

resuming:
  results are stored in OUTPUT/eval.json keyed by checkpoint (path and weight-file sizes/times), task and options,
  split, prompt count and every sampling setting; re-running skips what is there (no model is even loaded).

example:
  sfpo eval runs/paper/sfpo_qwen2.5-math-1.5b --tasks-file paper_eval.yaml --k 4 --temperature 1 --top-p 0.7 \\
      --max-new-tokens 2560 --output runs/paper/eval"""


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="model folders, LoRA adapter folders, hub names, or run folders (all of "
                                            "their checkpoints/step_* and best/)")
    p.add_argument("--task", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="a benchmark (repeatable); see below")
    p.add_argument("--tasks-file", default=None, metavar="FILE", help="benchmarks (and selection set) in YAML")
    p.add_argument("--split", default="test", help="split of the benchmarks (default: test)")
    p.add_argument("--select-task", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="a task whose --select-split picks the best checkpoint (repeatable)")
    p.add_argument("--select-split", default="validation",
                   help="split the best checkpoint is selected on (default: validation; 'test' = the paper's way)")
    p.add_argument("--num-prompts", type=int, default=None, help="first N prompts of each split (default: all)")
    p.add_argument("--k", type=int, default=4, help="samples per prompt (default: 4)")
    p.add_argument("--pass-at", default=None, metavar="J[,J...]",
                   help="report unbiased pass@J from the k samples for these J <= k (default: k)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"response limit in tokens (default: {DEFAULT_MAX_NEW_TOKENS}, cut to what the model's "
                        "position limit leaves after the longest prompt; the paper: 2560, 6144 for R1-distill)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; prompt i's samples are seeded by "
                                                       "seed + the start of its batch")
    p.add_argument("--batch-prompts", type=int, default=64, help="prompts per generate call (part of the seeding)")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="generation engine (default: hf)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model dtype for sampling (auto: bfloat16 on cuda, float32 elsewhere)")
    p.add_argument("--output", default=None, help="folder for eval.json / eval.md (default: the first path)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")



def _score(engine, job: Job, examples: list, s: EvalSettings, bar) -> tuple[list[int], float]:
    """Per-prompt correct counts and mean reward, one ``evaluate`` call per batch so progress can be shown. Batch
    b is seeded with seed + its start, exactly as one ``evaluate(..., batch_prompts=s.batch_prompts)`` call."""
    from sfpo.evaluate import evaluate

    correct: list[int] = []
    reward_sum = 0.0
    max_new = _room(engine, examples, s.max_new_tokens, job.label)
    for start in range(0, len(examples), s.batch_prompts):
        chunk = examples[start:start + s.batch_prompts]
        res = evaluate(engine, job.task, chunk, k=s.k, temperature=s.temperature, top_p=s.top_p,
                       max_new_tokens=max_new, seed=s.seed + start, batch_prompts=len(chunk))
        correct += res.per_prompt_correct
        reward_sum += res.mean_reward * len(chunk) * s.k
        if bar is not None:
            bar.update(len(chunk))
    return correct, reward_sum / max(len(correct) * s.k, 1)


def _room(engine, examples: list, wanted: int, label: str) -> int:
    """``wanted`` new tokens, or fewer when the model's ``max_position_embeddings`` leaves less room after the
    longest prompt (the testbed has 128 positions): logged, since it shortens every response of the job."""
    model, tok = getattr(engine, "model", None), getattr(engine, "tokenizer", None)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int) or tok is None:
        return wanted
    longest = max(len(tok(ex.prompt, add_special_tokens=False)["input_ids"]) for ex in examples)
    room = max(limit - longest, 1)
    if room < wanted:
        logger.warning("%s: --max-new-tokens %d cut to %d: the model has %d positions and the longest prompt takes "
                       "%d", label, wanted, room, limit, longest)
    return min(wanted, room)


def _load_model(ckpt: Checkpoint, device: str, dtype: str):
    import torch

    from safetensors import SafetensorError

    from sfpo.policy import PolicyLoadError, load_for_eval

    try:
        model, tok = load_for_eval(ckpt.path, device, dtype)  # read in the sampling dtype: no fp32 copy first
    except PolicyLoadError:  # already names the file and the problem
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise PolicyLoadError(f"{ckpt.path} is not a causal language model (or adapter) transformers can load: "
                              f"{e}") from None
    return model.to(getattr(torch, dtype)), tok  # a no-op unless the checkpoint holds mixed dtypes


def _make_engine(name: str, model, tokenizer):
    from sfpo.config import ConfigError
    from sfpo.rollout import make_engine

    try:
        return make_engine(name, model, tokenizer)
    except ImportError as e:
        raise ConfigError(f"--engine {name} cannot be used here: {e}") from None


def evaluate_checkpoints(plan: list[tuple[Checkpoint, list[Job]]], settings: EvalSettings, store: ResultStore,
                         load: Callable[[Checkpoint], tuple] | None = None,
                         engine_factory: Callable[[Any, Any], Any] | None = None, progress: bool = True) -> int:
    """Compute every (checkpoint, job) result of ``plan`` missing from ``store``; returns how many were computed.
    A checkpoint whose results are all stored is not loaded."""
    load = load or (lambda c: _load_model(c, "auto", settings.dtype))
    engine_factory = engine_factory or (lambda m, t: _make_engine(settings.engine, m, t))
    todo = [(c, [j for j in jobs if store.get(result_key(c, j, settings)) is None]) for c, jobs in plan]
    todo = [(c, js) for c, js in todo if js]
    n_todo = sum(len(js) for _, js in todo)
    logger.info("%d results to compute, %d already in %s", n_todo,
                sum(len(jobs) for _, jobs in plan) - n_todo, store.path)
    examples: dict[int, list] = {}  # loaded once per job, shared by every checkpoint
    done = 0
    redirect = contextlib.nullcontext()
    if progress:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()  # log lines go above the progress bar, not through it
    with redirect:
        for ckpt, js in todo:
            model, tok = load(ckpt)
            engine = engine_factory(model, tok)
            for job in js:
                if id(job) not in examples:
                    examples[id(job)] = _examples(job)
                done += 1
                record = _run_job(engine, ckpt, job, examples[id(job)], settings,
                                  f"[{done}/{n_todo}] {ckpt.name} {job.label}/{job.split}" if progress else None)
                store.add(record)
            del model, engine
            _free_memory()
    return done


def _examples(job: Job) -> list:
    from sfpo.config import ConfigError

    exs = job.task.examples(job.split, job.num_prompts)
    if not exs:
        raise ConfigError(f"{job.label}: the {job.split!r} split has no examples")
    return exs


def _run_job(engine, ckpt: Checkpoint, job: Job, exs: list, settings: EvalSettings, bar_title: str | None
             ) -> dict[str, Any]:
    """One stored result: the per-prompt correct counts of ``job`` on ``ckpt`` and what produced them."""
    t0 = time.perf_counter()
    bar = None
    if bar_title is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(exs), desc=bar_title, unit="prompt", dynamic_ncols=True, leave=False,
                   disable=None)  # None: no bar when stderr is not a terminal (logs, CI)
    try:
        correct, mean_reward = _score(engine, job, exs, settings, bar)
    finally:
        if bar is not None:
            bar.close()
    record = {"key": result_key(ckpt, job, settings), "checkpoint": ckpt.path, "fingerprint": ckpt.fingerprint,
              "label": job.label, **job.ident(), "n": len(correct), **asdict(settings), "per_prompt_correct": correct,
              "mean_reward": mean_reward, "seconds": round(time.perf_counter() - t0, 3)}
    m, k = metrics(record, [settings.k]), settings.k
    logger.info("%s %s/%s: avg@%d=%.4f pass@%d=%.4f (%d prompts, %.0f s)", ckpt.name, job.label, job.split, k,
                m["avg@k"], k, m[f"pass@{k}"], len(correct), record["seconds"])
    return record


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next checkpoint needs the room
    except ImportError:
        pass


def _pass_at(text: str | None, k: int) -> list[int]:
    from sfpo.config import ConfigError

    if text is None:
        return [k]
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--pass-at {text!r}: expected integers like 1,4") from None
    if not values or values[0] < 1 or values[-1] > k:
        raise ConfigError(f"--pass-at {text!r}: each J must satisfy 1 <= J <= k={k}")
    return values


def run_eval(args: argparse.Namespace) -> int:
    from sfpo.config import ConfigError
    from sfpo.policy import resolve_device
    from sfpo.runlock import holder

    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if resolve_device(args.device).type == "cuda" else "float32"
    settings = EvalSettings(k=args.k, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed, batch_prompts=args.batch_prompts,
                            engine=args.engine, dtype=dtype)
    pass_at = _pass_at(args.pass_at, args.k)
    if args.num_prompts is not None and args.num_prompts < 1:
        raise ConfigError("--num-prompts must be >= 1 (leave it out for all prompts)")
    bench_specs, select_specs = load_tasks_file(args.tasks_file) if args.tasks_file else ([], [])
    bench_specs += [parse_task_spec(t) for t in args.task]
    select_specs += [parse_task_spec(t) for t in args.select_task]
    if not bench_specs:
        raise ConfigError("sfpo eval: give at least one --task (or a --tasks-file with tasks:)")
    bench = build_jobs(bench_specs, args.split, args.num_prompts, "benchmark")
    if select_specs:
        select = build_jobs(select_specs, args.select_split, args.num_prompts, "selection task")
    else:  # the benchmarks that have the selection split, at that split
        select = [Job(j.spec, j.task, args.select_split, j.num_prompts, j.label) for j in bench
                  if has_split(j.task, args.select_split)]

    checkpoints: list[Checkpoint] = []
    for path in args.paths:
        for c in discover_checkpoints(path):
            if all(c.path != d.path for d in checkpoints):
                checkpoints.append(c)
    if args.output:
        out = Path(args.output)
    elif Path(args.paths[0]).is_dir():
        out = Path(args.paths[0])
    else:
        raise ConfigError(f"{args.paths[0]} is not a local folder: pass --output DIR for eval.json and eval.md")
    training = holder(out)
    if training:  # reading a run in training is fine (checkpoints are renamed into place whole); writing is not
        raise ConfigError(f"{out} is being trained ({training}): sfpo eval reads its checkpoints but writes nothing "
                          "there while it trains; pass --output DIR for eval.json and eval.md")
    store = ResultStore(out / "eval.json")
    # a selection job that is also a benchmark is sampled once; lone checkpoints skip the selection set
    both = list({json.dumps(j.ident(), sort_keys=True, default=str): j for j in bench + select}.values())
    per_run = {c.run: sum(d.run == c.run for d in checkpoints) for c in checkpoints}
    plan = [(c, both if per_run[c.run] > 1 else bench) for c in checkpoints]
    evaluate_checkpoints(plan, settings, store, load=lambda c: _load_model(c, args.device, dtype),
                         progress=not args.no_progress)
    report = build_report(checkpoints, bench, select, settings, store, pass_at, args.select_split)
    store.save(report)
    markdown = render_markdown(report)
    (out / "eval.md").write_text(markdown + "\n")
    print(markdown)
    print(summary_line(report, out))
    return 0
