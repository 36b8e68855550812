"""The checkpoints ``sfpo eval`` scores: a model or adapter folder, a hub name, or a run folder's
``checkpoints/step_*``, ``best/`` and other model folders, each with a fingerprint of its weight files."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Checkpoint", "discover_checkpoints"]

_STEP_DIR = re.compile(r"^step_(\d+)$")
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
