"""Checkpoints of the native trainer: writing them atomically and never from non-finite weights, finding the
newest complete one, resuming from it exactly, and checking before a model is loaded that an output folder
and an earlier run's checkpoint can be used (each problem one error naming it).

``CheckpointMixin`` is the part of ``sfpo.trainer.Trainer`` that touches disk; it expects the trainer's
attributes (cfg, out, model, tokenizer, optimizer, scheduler, update, switch, counters). No training here.
"""

from __future__ import annotations

import errno
import logging
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sfpo.config import ConfigError, to_dict
from sfpo.policy import PolicyLoadError, check_weight_files, nonfinite_params
from sfpo.runlock import RunLock

__all__ = ["CheckpointError", "CheckpointMixin", "check_output_dir", "tensor_count"]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written (disk full, non-finite weights) or read back (a damaged file)."""


class CheckpointMixin:
    """Saving, finding and resuming checkpoints, and the checks that run before a model loads."""

    def _preflight(self) -> None:
        """What would otherwise fail late, or with a message pointing elsewhere, checked before a model loads."""
        check_output_dir(self.out)
        self.run_lock = RunLock.acquire(self.out)  # before anything in the folder is read or cleaned
        self._remove_partial_checkpoints()
        name = self.cfg.task.name
        try:
            self.train_examples = self.task.examples("train")
            self.val_examples = self.task.examples(self.cfg.eval.split, self.cfg.eval.num_prompts)
        except ValueError as e:  # empty or unparseable data, a missing column: the task names the file
            raise ConfigError(str(e) if str(e).startswith(name) else f"task {name!r}: {e}") from None
        if not self.train_examples:
            raise ConfigError(f"task {name!r} has no training examples")
        if self.cfg.resume:
            self._check_earlier_run()

    def _remove_partial_checkpoints(self) -> None:
        """What a kill inside a checkpoint write or a rotation left: ``*.tmp`` folders and ``step_*`` folders without
        trainer_state.pt (renamed into place last, so a complete checkpoint always has it). Only this run's lock
        holder gets here, so no other process is writing them."""
        root = self.out / "checkpoints"
        partial = {p for p in root.glob("step_*") if p.is_dir() and not (p / "trainer_state.pt").exists()}
        partial |= {p for p in [*root.glob("*.tmp"), *self.out.glob("*.tmp")] if p.is_dir()}
        for p in sorted(partial):
            logger.info("removing %s: a checkpoint write cut short (no trainer_state.pt)", p)
            shutil.rmtree(p, ignore_errors=True)

    def _check_earlier_run(self) -> None:
        """The checkpoint a resume would use must be readable and from this kind of run (its config is read
        memory-mapped, its weight files' headers only)."""
        ckpts = self._checkpoints()
        if not ckpts:
            return
        path = ckpts[-1]
        fix = f"delete {path} to resume from the checkpoint before it (or from the start)"
        try:
            check_weight_files(path)
            saved = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False, mmap=True)
            theirs = _run_kind(saved["config"])
        except PolicyLoadError as e:
            raise CheckpointError(f"cannot resume: {e}; {fix}") from None
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as e:
            raise CheckpointError(f"cannot resume: {path / 'trainer_state.pt'} is damaged ({e}); {fix}") from None
        ours = _run_kind(to_dict(self.cfg))
        if theirs != ours:
            describe = lambda kind: ", ".join(f"{k}={v}" for k, v in kind.items())  # noqa: E731
            raise ConfigError(f"output_dir {self.out} holds another run: {path.name} was saved by a run with "
                              f"{describe(theirs)}, this one has {describe(ours)}. Use another output_dir, or "
                              f"delete {self.out / 'checkpoints'} to start this run there")

    def _save_model(self, path: Path) -> None:
        from safetensors import SafetensorError
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a shard bar per save would drown the training progress bar
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        except (OSError, RuntimeError, SafetensorError) as e:  # a full disk: keep what `path` held
            error = self._write_error(path, e)  # before the cleanup frees the space again
            shutil.rmtree(tmp, ignore_errors=True)
            raise error from None
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)

    def _load_model_weights(self, path: Path) -> None:
        if (path / "adapter_model.safetensors").exists():  # a PEFT checkpoint holds the adapters only
            from peft import set_peft_model_state_dict

            state = _load_file(path / "adapter_model.safetensors", self.device)
            unexpected = set_peft_model_state_dict(self.model, state).unexpected_keys
            if unexpected:
                raise RuntimeError(f"adapter checkpoint {path} does not match the model: unexpected={unexpected}")
            return
        state = {}
        for f in sorted(path.glob("*.safetensors")):
            state.update(_load_file(f, self.device))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied lm_head is not saved
            raise RuntimeError(f"checkpoint {path} does not match the model: missing={missing}, "
                               f"unexpected={unexpected}")

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint: HF model folder + trainer_state.pt (optimizer, scheduler, SFPO, counters)."""
        root = self.out / "checkpoints"
        path = root / f"step_{self.step:06d}"
        bad = nonfinite_params(self.model)
        if bad:  # nothing resumes from it; the last checkpoint written stays the newest
            raise CheckpointError(f"not writing {path}: NaN/inf weights in {tensor_count(bad)} (first {bad[0]!r}); "
                                  "nan_guard=true skips the steps that produce them")
        self._save_model(path)
        state = {
            "step": self.step, "rollouts": self.rollouts, "train_time": self.train_time, "best": self.best,
            "nan_skips": self.nan_skips, "consecutive_skips": self.consecutive_skips,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "update": self.update.state_dict(),
            "switch": self.switch.state_dict(), "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(), "config": to_dict(self.cfg),
        }
        try:
            torch.save(state, path / "trainer_state.tmp")
        except (OSError, RuntimeError) as e:  # torch's stream writer reports a full disk as a RuntimeError
            error = self._write_error(path, e)
            shutil.rmtree(path, ignore_errors=True)  # a model without its trainer state resumes nothing
            raise error from None
        (path / "trainer_state.tmp").rename(path / "trainer_state.pt")
        for old in self._checkpoints()[:-max(self.cfg.keep_checkpoints, 1)]:  # complete ones: a partial never counts
            (old / "trainer_state.pt").unlink()  # first: a deletion cut short leaves no resumable-looking folder
            shutil.rmtree(old, ignore_errors=True)
        return path

    def _write_error(self, path: Path, e: Exception) -> CheckpointError:
        free = shutil.disk_usage(self.out).free
        need = sum(p.numel() * p.element_size() for p in self.params)  # what save_pretrained writes (LoRA: adapters)
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or free < need:
            why = f"the disk is full ({_size(free)} free under {self.out}, the weights alone take {_size(need)})"
        else:
            why = f"{type(e).__name__}: {e}"
        older = [p for p in self._checkpoints() if p.name != path.name]
        kept = f"the checkpoint before it, {older[-1]}, is intact" if older else "no earlier checkpoint exists"
        if path.name == "best" and path.exists():
            kept = f"{path} keeps the previous best policy"
        return CheckpointError(f"could not write {path}: {why}; {kept}")

    def _checkpoints(self) -> list[Path]:
        return complete_checkpoints(self.out)

    def _follow_config_lr(self, saved: dict[str, Any]) -> None:
        """Optimizer and scheduler state carry the checkpoint's LR; a resume with another optim.lr (as after a run
        stopped on exploding updates) continues with the configured one."""
        old, new = saved["optim"]["lr"], self.cfg.optim.lr
        if old == new:
            return
        logger.warning("optim.lr is %g, the checkpoint was trained with %g: continuing with %g", new, old, new)
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scheduler.base_lrs = [new] * len(self.optimizer.param_groups)
        for g in self.optimizer.param_groups:
            g["initial_lr"], g["lr"] = new, new * factor

    def _maybe_resume(self) -> int | None:
        ckpts = self._checkpoints()
        if not ckpts:
            return None
        path = ckpts[-1]
        state = torch.load(path / "trainer_state.pt", map_location=self.device, weights_only=False)
        self._load_model_weights(path)
        bad = nonfinite_params(self.model)
        if bad:
            raise CheckpointError(f"cannot resume: {path} holds NaN/inf weights (first {bad[0]!r}); delete {path} "
                                  "to resume from the checkpoint before it (or from the start)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._follow_config_lr(state["config"])
        self.update.load_state_dict(state["update"])
        self.switch.load_state_dict(state["switch"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step, self.rollouts, self.train_time = state["step"], state["rollouts"], state["train_time"]
        self.best, self.nan_skips = state["best"], state["nan_skips"]
        self.consecutive_skips = state.get("consecutive_skips", 0)  # absent from checkpoints of older versions
        logger.info("resumed from %s (step %d, %d rollouts)", path, self.step, self.rollouts)
        return self.step


def complete_checkpoints(out: Path) -> list[Path]:
    """The step checkpoints under ``out`` that a resume can use, oldest first (trainer_state.pt is renamed into
    place last, so a folder without it was cut short)."""
    return sorted(p for p in (out / "checkpoints").glob("step_*") if (p / "trainer_state.pt").exists())


def check_output_dir(out: Path) -> None:
    """output_dir must be, or become, a folder this process can write."""
    existing = next(p for p in (out, *out.parents) if p.exists())  # parents end at "." or "/"
    if not existing.is_dir():
        where = "is a file" if existing == out else f"lies under {existing}, which is a file"
        raise ConfigError(f"output_dir {out} {where}; point output_dir at a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise ConfigError(f"output_dir {out} is not writable: {e.strerror or e}") from None


def _run_kind(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it; other settings may change on resume."""
    a = cfg["algorithm"]
    return {"algorithm": a["name"], "switch": a["switch"] if a["name"] == "sfpo" else "never",
            "lora_rank": cfg["model"]["lora_rank"]}


def _load_file(f: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(f), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{f} is truncated or corrupt ({e}); delete its checkpoint folder to resume from "
                              "the one before it") from None


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def tensor_count(names: list[str]) -> str:
    return f"{len(names)} tensor" + ("s" if len(names) > 1 else "")
