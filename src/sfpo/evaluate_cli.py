"""``sfpo eval``: avg@k and unbiased pass@k of checkpoints on several benchmarks, per benchmark and macro average.

Takes model folders, LoRA adapter folders, hub names or run folders (their ``checkpoints/step_*`` and ``best/``),
reports each run's last checkpoint and its best one together with the split that selected it, and writes
``eval.json`` and ``eval.md``. A finished (checkpoint, benchmark, settings) result is stored in ``eval.json`` and
never recomputed. Sampling and scoring are ``sfpo.evaluate``'s; this module only plans, caches and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["EVAL_DESCRIPTION", "EVAL_EPILOG", "TaskSpec", "EvalSettings", "Checkpoint", "ResultStore",
           "add_eval_args", "run_eval", "parse_task_spec", "load_tasks_file", "find_checkpoints",
           "discover_checkpoints", "evaluate_checkpoints", "build_report", "render_markdown"]

logger = logging.getLogger(__name__)

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

_EVAL_KEYS = ("split", "num_prompts", "label")
_STEP_DIR = re.compile(r"^step_(\d+)$")
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
    p.add_argument("--max-new-tokens", type=int, default=16, help="response limit in tokens (default: 16, the "
                                                                   "testbed's; math needs thousands)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; prompt i's samples are seeded by "
                                                       "seed + the start of its batch")
    p.add_argument("--batch-prompts", type=int, default=64, help="prompts per generate call (part of the seeding)")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="generation engine (default: hf)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model dtype for sampling (auto: bfloat16 on cuda, float32 elsewhere)")
    p.add_argument("--output", default=None, help="folder for eval.json / eval.md (default: the first path)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# ------------------------------------------------------------------------------------------------ task specs
@dataclass
class TaskSpec:
    """One benchmark: a registered task with its options, plus where and how much of it to score."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    num_prompts: int | None = None
    label: str | None = None


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside [], {}, () or quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def _spec_from_mapping(data: Any, where: str, common: dict[str, Any] | None = None) -> TaskSpec:
    from sfpo.config import ConfigError

    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise ConfigError(f"{where}: each task needs 'task: <registered name>', got {data!r}")
    options = {**(common or {}), **{k: v for k, v in data.items() if k != "task"}}
    evals = {k: options.pop(k) for k in _EVAL_KEYS if k in options}
    num = evals.get("num_prompts")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 1):
        raise ConfigError(f"{where}: num_prompts must be a positive integer, got {num!r}")
    for key in ("split", "label"):
        if key in evals and not isinstance(evals[key], str):
            raise ConfigError(f"{where}: {key} must be a string, got {evals[key]!r}")
    return TaskSpec(data["task"], options, evals.get("split"), num, evals.get("label"))


def parse_task_spec(text: str) -> TaskSpec:
    """``NAME[:KEY=VALUE,...]`` → TaskSpec; values are YAML scalars, lists or mappings."""
    import yaml

    from sfpo.config import ConfigError

    name, _, rest = text.partition(":")
    data: dict[str, Any] = {"task": name.strip()}
    for item in _split_top_level(rest):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--task {text!r}: {item!r} is not KEY=VALUE")
        try:
            data[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--task {text!r}: the value of {key.strip()} is not valid YAML: {e}") from None
    if not data["task"]:
        raise ConfigError(f"--task {text!r}: no task name before ':'")
    return _spec_from_mapping(data, f"--task {text!r}")


def load_tasks_file(path: str | Path) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """(benchmarks, selection set) from a YAML file with ``tasks:``, optional ``select:`` and ``common:``."""
    import yaml

    from sfpo.config import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--tasks-file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or set(data) - {"tasks", "select", "common"}:
        raise ConfigError(f"{p}: expected a mapping with keys tasks, select (optional), common (optional)")
    common = data.get("common") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{p}: common must be a mapping of task options")
    out = []
    for key in ("tasks", "select"):
        items = data.get(key) or []
        if not isinstance(items, list):
            raise ConfigError(f"{p}: {key} must be a list of tasks")
        out.append([_spec_from_mapping(it, f"{p} {key}[{i}]", common) for i, it in enumerate(items)])
    return out[0], out[1]


@dataclass
class _Job:
    """A task instance at a split: what one result row scores."""

    spec: TaskSpec
    task: Any
    split: str
    num_prompts: int | None
    label: str

    def ident(self) -> dict[str, Any]:
        return {"task": self.spec.name, "options": self.spec.options, "split": self.split,
                "num_prompts": self.num_prompts}


def _build_jobs(specs: list[TaskSpec], default_split: str, default_n: int | None, role: str) -> list[_Job]:
    from sfpo.config import ConfigError

    jobs = []
    for spec in specs:
        try:
            task = _make_task(spec.name, spec.options)
        except (ValueError, TypeError) as e:  # an unknown task or option: the user's to fix
            raise ConfigError(f"{role} {spec.name}: {e}") from None
        job = _Job(spec, task, spec.split or default_split, spec.num_prompts or default_n,
                   spec.label or str(getattr(task, "name", spec.name)))
        if not _has_split(task, job.split):
            raise ConfigError(f"{role} {job.label}: no {job.split!r} split (it has {_splits_of(task)})")
        jobs.append(job)
    labels = [j.label for j in jobs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"two {role}s are both called {dupes[0]!r}; give one of them label=...")
    return jobs


def _make_task(name: str, options: dict[str, Any]) -> Any:
    from sfpo.tasks import TASKS, get_task

    if "name" not in options:
        return get_task(name, **options)
    # get_task's own first parameter is called "name", so MathTask's name option cannot pass through it: let
    # get_task check the task and the other options, then call the factory itself
    get_task(name, **{k: v for k, v in options.items() if k != "name"})
    return TASKS[name](**options)


def _splits_of(task: Any) -> list[str]:
    from sfpo.tasks import SPLITS

    return list(task.available_splits()) if hasattr(task, "available_splits") else list(SPLITS)


def _has_split(task: Any, split: str) -> bool:
    return split in _splits_of(task)


# ------------------------------------------------------------------------------------------------ checkpoints
@dataclass
class Checkpoint:
    path: str
    """A local folder, or a hub name."""
    run: str
    """The run folder it belongs to (the path itself for a lone model)."""
    name: str
    """Its name in the report, relative to the run ("checkpoints/step_000050", "best")."""
    step: int | None
    """Training step of a ``step_*`` folder; for ``best`` the step summary.json names, if any."""
    fingerprint: str
    """Weight-file names, sizes and modification times: a re-saved ``best/`` is a new checkpoint."""
    is_step: bool = False


def _is_model(p: Path) -> bool:
    return p.is_dir() and ((p / "config.json").exists() or (p / "adapter_config.json").exists())


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name in ("config.json", "adapter_config.json")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _best_step(run: Path) -> int | None:
    try:
        step = json.loads((run / "summary.json").read_text()).get("best_step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and step >= 0 else None


def discover_checkpoints(path: str | Path) -> list[Checkpoint]:
    """The checkpoints under ``path``: itself if it is a model (or adapter) folder or a hub name; else a run's
    ``checkpoints/step_*`` in step order, its ``best/``, then any other model folder directly inside it."""
    p = Path(path)
    if not p.exists():
        if _HUB_NAME.match(str(path)):
            return [Checkpoint(str(path), str(path), str(path), None, f"hub:{path}")]
        raise FileNotFoundError(f"{path} does not exist (and is not a hub name like Qwen/Qwen2.5-Math-1.5B)")
    if _is_model(p):
        m = _STEP_DIR.match(p.name)
        return [Checkpoint(str(p), str(p), p.name, int(m.group(1)) if m else None, _fingerprint(p), bool(m))]
    found: list[Checkpoint] = []
    steps = [(int(m.group(1)), d) for d in (p / "checkpoints").glob("step_*")
             if (m := _STEP_DIR.match(d.name)) and _is_model(d)]  # skips the trainer's half-written step_*.tmp
    for step, d in sorted(steps):
        found.append(Checkpoint(str(d), str(p), f"checkpoints/{d.name}", step, _fingerprint(d), True))
    if _is_model(p / "best"):
        found.append(Checkpoint(str(p / "best"), str(p), "best", _best_step(p), _fingerprint(p / "best")))
    for d in sorted(p.iterdir()):
        if d.name != "best" and not d.name.endswith(".tmp") and _is_model(d):
            found.append(Checkpoint(str(d), str(p), d.name, None, _fingerprint(d)))
    if not found:
        raise FileNotFoundError(f"{p} holds no model: no config.json or adapter_config.json in it, in "
                                "checkpoints/step_*, in best/ or in a folder directly inside it")
    return found


def find_checkpoints(path: Path) -> list[Path]:
    """The model folders of ``path`` (see ``discover_checkpoints``)."""
    return [Path(c.path) for c in discover_checkpoints(path)]


# ------------------------------------------------------------------------------------------------ results store
@dataclass(frozen=True)
class EvalSettings:
    k: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    seed: int = 0
    batch_prompts: int = 64
    engine: str = "hf"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        from sfpo.config import ConfigError

        if self.k < 1 or self.max_new_tokens < 1 or self.batch_prompts < 1:
            raise ConfigError("--k, --max-new-tokens and --batch-prompts must be >= 1")
        if not 0.0 < self.top_p <= 1.0 or self.temperature < 0:
            raise ConfigError(f"--top-p must lie in (0, 1] and --temperature be >= 0, got {self.top_p}, "
                              f"{self.temperature}")


def _key(ckpt: Checkpoint, job: _Job, s: EvalSettings) -> str:
    where = ckpt.path if ckpt.fingerprint.startswith("hub:") else str(Path(ckpt.path).resolve())
    return json.dumps({"checkpoint": where, "fingerprint": ckpt.fingerprint, **job.ident(), **asdict(s)},
                      sort_keys=True, default=str)


class ResultStore:
    """The results in ``eval.json``, rewritten (atomically) after each new one so an interrupted run resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.report: dict[str, Any] | None = None
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self.records = list(data["results"])
                self.report = {k: v for k, v in data.items() if k != "results"}
            except (ValueError, KeyError, TypeError) as e:
                from sfpo.config import ConfigError

                raise ConfigError(f"{path} is not an eval.json written by sfpo eval ({e}); move it away or pass "
                                  "another --output") from None
        self._index = {r["key"]: r for r in self.records}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._index.get(key)

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._index[record["key"]] = record
        self.save()

    def save(self, report: dict[str, Any] | None = None) -> None:
        if report is not None:
            self.report = report
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({**(self.report or {}), "results": self.records}, indent=1))
        os.replace(tmp, self.path)


# ------------------------------------------------------------------------------------------------ evaluating
def _score(engine, job: _Job, examples: list, s: EvalSettings, bar) -> tuple[list[int], float]:
    """Per-prompt correct counts and mean reward, one ``evaluate`` call per batch so progress can be shown. Batch
    b is seeded with seed + its start, exactly as one ``evaluate(..., batch_prompts=s.batch_prompts)`` call."""
    from sfpo.evaluate import evaluate

    correct: list[int] = []
    reward_sum = 0.0
    for start in range(0, len(examples), s.batch_prompts):
        chunk = examples[start:start + s.batch_prompts]
        res = evaluate(engine, job.task, chunk, k=s.k, temperature=s.temperature, top_p=s.top_p,
                       max_new_tokens=s.max_new_tokens, seed=s.seed + start, batch_prompts=len(chunk))
        correct += res.per_prompt_correct
        reward_sum += res.mean_reward * len(chunk) * s.k
        if bar is not None:
            bar.update(len(chunk))
    return correct, reward_sum / max(len(correct) * s.k, 1)


def _load_model(ckpt: Checkpoint, device: str, dtype: str):
    import torch

    from sfpo.policy import PolicyLoadError, load_for_eval

    try:
        model, tok = load_for_eval(ckpt.path, device)
    except (OSError, ValueError, KeyError) as e:
        raise PolicyLoadError(f"{ckpt.path} is not a causal language model (or adapter) transformers can load: "
                              f"{e}") from None
    return model.to(getattr(torch, dtype)), tok


def _make_engine(name: str, model, tokenizer):
    from sfpo.config import ConfigError
    from sfpo.rollout import make_engine

    try:
        return make_engine(name, model, tokenizer)
    except ImportError as e:
        raise ConfigError(f"--engine {name} cannot be used here: {e}") from None


def evaluate_checkpoints(plan: list[tuple[Checkpoint, list[_Job]]], settings: EvalSettings, store: ResultStore,
                         load: Callable[[Checkpoint], tuple] | None = None,
                         engine_factory: Callable[[Any, Any], Any] | None = None, progress: bool = True) -> int:
    """Compute every (checkpoint, job) result of ``plan`` missing from ``store``; returns how many were computed.
    A checkpoint whose results are all stored is not loaded."""
    load = load or (lambda c: _load_model(c, "auto", settings.dtype))
    engine_factory = engine_factory or (lambda m, t: _make_engine(settings.engine, m, t))
    todo = [(c, [j for j in jobs if store.get(_key(c, j, settings)) is None]) for c, jobs in plan]
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


def _examples(job: _Job) -> list:
    from sfpo.config import ConfigError

    exs = job.task.examples(job.split, job.num_prompts)
    if not exs:
        raise ConfigError(f"{job.label}: the {job.split!r} split has no examples")
    return exs


def _run_job(engine, ckpt: Checkpoint, job: _Job, exs: list, settings: EvalSettings, bar_title: str | None
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
    record = {"key": _key(ckpt, job, settings), "checkpoint": ckpt.path, "fingerprint": ckpt.fingerprint,
              "label": job.label, **job.ident(), "n": len(correct), **asdict(settings), "per_prompt_correct": correct,
              "mean_reward": mean_reward, "seconds": round(time.perf_counter() - t0, 3)}
    m, k = _metrics(record, [settings.k]), settings.k
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


# ------------------------------------------------------------------------------------------------ reporting
def _metrics(record: dict[str, Any], pass_at: list[int]) -> dict[str, float]:
    from sfpo.evaluate import pass_at_k

    k, correct = record["k"], record["per_prompt_correct"]
    n = max(len(correct), 1)
    out = {"avg@k": sum(c / k for c in correct) / n}
    for j in pass_at:
        out[f"pass@{j}"] = sum(pass_at_k(k, c, j) for c in correct) / n
    out["mean_reward"] = record["mean_reward"]
    out["num_prompts"] = len(correct)
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _selection_note(bench: list[_Job], select: list[_Job], split: str) -> tuple[str, str]:
    """(kind, sentence) describing what picks the best checkpoint: "held-out", "reported" or "none"."""
    if not select:
        return "none", (f"No checkpoint selection: no benchmark has a {split!r} split and no --select-task was "
                        "given. Pass the training task as --select-task (its validation rows are held out of "
                        "training), or --select-split test to select on the reported test sets as the paper did.")
    names = ", ".join(f"{j.label}/{j.split} ({j.num_prompts or 'all'} prompts)" for j in select)

    def data(j: _Job) -> str:  # the prompt count does not matter: a subset of a reported split is reported data
        return json.dumps({**j.ident(), "num_prompts": None}, sort_keys=True, default=str)

    if {data(j) for j in select} & {data(j) for j in bench}:
        return "reported", (f"Best = highest macro avg@k on {names}, data this report also scores (the paper's "
                            "protocol): the best checkpoint's numbers are optimistic.")
    return "held-out", f"Best = highest macro avg@k on {names}; the reported benchmarks played no part in it."


def build_report(checkpoints: list[Checkpoint], bench: list[_Job], select: list[_Job], settings: EvalSettings,
                 store: ResultStore, pass_at: list[int] | None = None, select_split: str = "validation"
                 ) -> dict[str, Any]:
    """Per run: every checkpoint's per-benchmark and macro numbers, the last checkpoint and the selected best."""
    pass_at = pass_at or [settings.k]
    kind, note = _selection_note(bench, select, select_split)
    runs: dict[str, list[Checkpoint]] = {}
    for c in checkpoints:
        runs.setdefault(c.run, []).append(c)
    out_runs = []
    for run, ckpts in runs.items():
        rows = []
        for c in ckpts:
            per = {j.label: _metrics(store.get(_key(c, j, settings)), pass_at) for j in bench}
            macro = {m: _mean([per[j.label][m] for j in bench]) for m in ["avg@k"] + [f"pass@{x}" for x in pass_at]}
            # a lone checkpoint has nothing to be selected against, so its selection set is not sampled
            sel = [_metrics(store.get(_key(c, j, settings)), pass_at)["avg@k"] for j in select] \
                if len(ckpts) > 1 else []
            rows.append({"checkpoint": c.name, "path": c.path, "step": c.step, "benchmarks": per, "macro": macro,
                         "select_score": _mean(sel)})
        steps = [r for r, c in zip(rows, ckpts) if c.is_step]
        last = max(steps, key=lambda r: r["step"]) if steps else (rows[0] if len(rows) == 1 else None)
        if len(rows) == 1:
            best, how = rows[0], "the only checkpoint: nothing to select"
        elif select:
            best = max(rows, key=lambda r: r["select_score"])  # max keeps the first of equals: the earlier one
            how = note
        else:
            best, how = None, note
        out_runs.append({"run": run, "checkpoints": rows, "last": last and last["checkpoint"],
                         "best": best and best["checkpoint"], "selected_on": how, "selection": kind})
    return {"settings": asdict(settings), "pass_at": pass_at, "benchmarks": [j.label for j in bench],
            "benchmark_splits": {j.label: j.split for j in bench},
            "selection": {"kind": kind, "split": select_split, "tasks": [f"{j.label}/{j.split}" for j in select],
                          "note": note}, "runs": out_runs}


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    s, j = report["settings"], max(report["pass_at"])
    k = s["k"]
    lines = [f"# sfpo eval: avg@{k} / pass@{j} (%)", "",
             f"Sampling: k={k}, temperature {s['temperature']}, top-p {s['top_p']}, at most {s['max_new_tokens']} "
             f"new tokens, seed {s['seed']}, {s['batch_prompts']} prompts per batch, engine {s['engine']} "
             f"({s['dtype']}). Benchmarks: " + ", ".join(f"{b} ({sp})" for b, sp in
                                                       report["benchmark_splits"].items()) + ".", ""]
    for run in report["runs"]:
        bench = report["benchmarks"]
        has_sel = any(r["select_score"] is not None for r in run["checkpoints"])
        head = ["checkpoint", *bench, "macro avg"] + ([f"select avg@{k}"] if has_sel else [])
        lines += [f"## {run['run']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in run["checkpoints"]:
            name = r["checkpoint"] + (f" (step {r['step']})" if r["checkpoint"] == "best" and r["step"] is not None
                                      else "")
            tags = [t for t, who in (("best", run["best"]), ("last", run["last"])) if who == r["checkpoint"]]
            name = f"**{name}** ({', '.join(tags)})" if tags else name
            cells = [f"{_pct(r['benchmarks'][b]['avg@k'])} / {_pct(r['benchmarks'][b][f'pass@{j}'])}" for b in bench]
            cells.append(f"{_pct(r['macro']['avg@k'])} / {_pct(r['macro'][f'pass@{j}'])}")
            if has_sel:
                cells.append(_pct(r["select_score"]))
            lines.append("| " + " | ".join([name, *cells]) + " |")
        by_name = {r["checkpoint"]: r for r in run["checkpoints"]}
        lines.append("")
        for tag in ("best", "last"):
            who = run[tag]
            if who is None:
                lines.append(f"- **{tag}**: none" + (" (no step_* checkpoint)" if tag == "last" else ""))
                continue
            m = by_name[who]["macro"]
            lines.append(f"- **{tag}**: {who}: macro avg@{k} {_pct(m['avg@k'])}, pass@{j} {_pct(m[f'pass@{j}'])}")
        lines += [f"- selection: {run['selected_on']}", ""]
    return "\n".join(lines)


def _summary_line(report: dict[str, Any], out: Path) -> str:
    runs = []
    for run in report["runs"]:
        by_name = {r["checkpoint"]: r for r in run["checkpoints"]}
        entry = {"run": run["run"], "selection": run["selection"]}
        for tag in ("best", "last"):
            entry[tag] = run[tag]
            entry[f"{tag}_macro_avg@k"] = by_name[run[tag]]["macro"]["avg@k"] if run[tag] else None
        runs.append(entry)
    return json.dumps({"k": report["settings"]["k"], "runs": runs, "output": str(out)})


# ------------------------------------------------------------------------------------------------ the command
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
    bench = _build_jobs(bench_specs, args.split, args.num_prompts, "benchmark")
    if select_specs:
        select = _build_jobs(select_specs, args.select_split, args.num_prompts, "selection task")
    else:  # the benchmarks that have the selection split, at that split
        select = [_Job(j.spec, j.task, args.select_split, j.num_prompts, j.label) for j in bench
                  if _has_split(j.task, args.select_split)]

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
    print(_summary_line(report, out))
    return 0
