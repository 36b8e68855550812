"""Which benchmarks ``sfpo eval`` scores: ``--task NAME:KEY=VALUE,...`` and ``--tasks-file`` parsed into task
specs, and each spec built into a job (a task instance at a split). Knows nothing of checkpoints or sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TaskSpec", "Job", "parse_task_spec", "load_tasks_file", "build_jobs", "make_task", "splits_of",
           "has_split"]

_EVAL_KEYS = ("split", "num_prompts", "label")


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
class Job:
    """A task instance at a split: what one result row scores."""

    spec: TaskSpec
    task: Any
    split: str
    num_prompts: int | None
    label: str

    def ident(self) -> dict[str, Any]:
        return {"task": self.spec.name, "options": self.spec.options, "split": self.split,
                "num_prompts": self.num_prompts}


def build_jobs(specs: list[TaskSpec], default_split: str, default_n: int | None, role: str) -> list[Job]:
    from sfpo.config import ConfigError

    jobs = []
    for spec in specs:
        try:
            task = make_task(spec.name, spec.options)
        except (ValueError, TypeError) as e:  # an unknown task or option: the user's to fix
            raise ConfigError(f"{role} {spec.name}: {e}") from None
        job = Job(spec, task, spec.split or default_split, spec.num_prompts or default_n,
                   spec.label or str(getattr(task, "name", spec.name)))
        if not has_split(task, job.split):
            raise ConfigError(f"{role} {job.label}: no {job.split!r} split (it has {splits_of(task)})")
        jobs.append(job)
    labels = [j.label for j in jobs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"two {role}s are both called {dupes[0]!r}; give one of them label=...")
    return jobs


def make_task(name: str, options: dict[str, Any]) -> Any:
    from sfpo.tasks import TASKS, get_task

    if "name" not in options:
        return get_task(name, **options)
    # get_task's own first parameter is called "name", so MathTask's name option cannot pass through it: let
    # get_task check the task and the other options, then call the factory itself
    get_task(name, **{k: v for k, v in options.items() if k != "name"})
    return TASKS[name](**options)


def splits_of(task: Any) -> list[str]:
    from sfpo.tasks import SPLITS

    return list(task.available_splits()) if hasattr(task, "available_splits") else list(SPLITS)


def has_split(task: Any, split: str) -> bool:
    return split in splits_of(task)
