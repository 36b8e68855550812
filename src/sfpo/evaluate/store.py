"""Results of ``sfpo eval`` in ``eval.json``: the sampling settings, the key of one (checkpoint, job, settings)
result, and a store rewritten atomically after each new result so an interrupted evaluation resumes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sfpo.evaluate.checkpoints import Checkpoint
from sfpo.evaluate.specs import Job

__all__ = ["EvalSettings", "ResultStore", "result_key"]


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


def result_key(ckpt: Checkpoint, job: Job, s: EvalSettings) -> str:
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
