"""The task registry: procedural reasoning tasks for the CPU testbed and math datasets, each with its verifier.

``get_task(name, **kwargs)`` builds a task; an unknown name or option is a ValueError that lists what exists.
Add a task with ``register_task(name, factory)``.
"""

from __future__ import annotations

import inspect
from typing import Callable

from sfpo.tasks.base import SPLITS, Example, Task

__all__ = ["Example", "Task", "SPLITS", "TASKS", "get_task", "register_task"]

TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Make ``get_task(name, **options)`` call ``factory(**options)``; its keyword parameters are the options."""
    TASKS[name] = factory


def get_task(name: str, /, **kwargs) -> Task:
    """A new task ``name`` built with the options ``kwargs``; ValueError naming what exists otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    factory = TASKS[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(f"task {name!r} has no option {unknown[0]!r}; its options: {sorted(params)}")
    return factory(**kwargs)


def _register_builtin() -> None:
    from sfpo.tasks.arithmetic import ArithmeticTask
    from sfpo.tasks.countdown import CountdownTask
    from sfpo.tasks.multiplication import MultiplicationTask

    register_task("arithmetic", ArithmeticTask)
    register_task("countdown", CountdownTask)
    register_task("multiplication", MultiplicationTask)
    try:
        from sfpo.tasks.math import register as register_math  # needs datasets + math-verify (train extra)
    except ImportError:
        return
    register_math(register_task)


# filled at import, so that TASKS lists every built-in task before anyone calls get_task
_register_builtin()
