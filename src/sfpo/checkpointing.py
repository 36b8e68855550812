"""Checkpoints of the native trainer: writing them atomically and never from non-finite weights, finding the
newest complete one, reading it back, and checking before a model is loaded that an output folder and an earlier
run's checkpoint can be used (each problem one error naming it).

``Checkpoints`` is an object the trainer owns: it takes the model and the trainer's state dict and gives them
back; what the state holds and how it is restored is the trainer's business. No training here.
"""

from __future__ import annotations

import errno
import logging
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sfpo.config import ConfigError
from sfpo.policy import PolicyLoadError, check_weight_files, deepspeed_unimported, nonfinite_params

__all__ = ["CheckpointError", "Checkpoints", "check_output_dir", "complete_checkpoints", "tensor_count"]

logger = logging.getLogger(__name__)

STATE = "trainer_state.pt"  # renamed into place last: a folder without it was cut short


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written (disk full, non-finite weights) or read back (a damaged file)."""


class Checkpoints:
    """The run's checkpoints under ``out/checkpoints/step_NNNNNN`` (an HF model folder + ``trainer_state.pt``),
    the newest ``keep`` kept, and ``out/best``."""

    def __init__(self, out: Path, keep: int) -> None:
        self.out, self.keep = out, max(keep, 1)

    def complete(self) -> list[Path]:
        return complete_checkpoints(self.out)

    def remove_partial(self) -> None:
        """What a kill inside a checkpoint write or a rotation left: ``*.tmp`` folders and ``step_*`` folders without
        trainer_state.pt (renamed into place last, so a complete checkpoint always has it). Call it only while
        holding the folder's run lock, so that no other process is writing them."""
        root = self.out / "checkpoints"
        partial = {p for p in root.glob("step_*") if p.is_dir() and not (p / STATE).exists()}
        partial |= {p for p in [*root.glob("*.tmp"), *self.out.glob("*.tmp")] if p.is_dir()}
        for p in sorted(partial):
            logger.info("removing %s: a checkpoint write cut short (no %s)", p, STATE)
            shutil.rmtree(p, ignore_errors=True)

    def check_resumable(self, config: dict[str, Any]) -> None:
        """The checkpoint a resume would use must be readable and from this kind of run (its config is read
        memory-mapped, its weight files' headers only)."""
        ckpts = self.complete()
        if not ckpts:
            return
        path = ckpts[-1]
        fix = f"delete {path} to resume from the checkpoint before it (or from the start)"
        try:
            check_weight_files(path)
            saved = torch.load(path / STATE, map_location="cpu", weights_only=False, mmap=True)
            theirs = _run_kind(saved["config"])
        except PolicyLoadError as e:
            raise CheckpointError(f"cannot resume: {e}; {fix}") from None
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as e:
            raise CheckpointError(f"cannot resume: {path / STATE} is damaged ({e}); {fix}") from None
        ours = _run_kind(config)
        if theirs != ours:
            describe = lambda kind: ", ".join(f"{k}={v}" for k, v in kind.items())  # noqa: E731
            raise ConfigError(f"output_dir {self.out} holds another run: {path.name} was saved by a run with "
                              f"{describe(theirs)}, this one has {describe(ours)}. Use another output_dir, or "
                              f"delete {self.out / 'checkpoints'} to start this run there")

    def save(self, step: int, model, tokenizer, state: dict[str, Any]) -> Path:
        """A resumable checkpoint of ``step``: the model folder, then ``state`` (the trainer's state dict)."""
        path = self.out / "checkpoints" / f"step_{step:06d}"
        bad = nonfinite_params(model)
        if bad:  # nothing resumes from it; the last checkpoint written stays the newest
            raise CheckpointError(f"not writing {path}: NaN/inf weights in {tensor_count(bad)} (first {bad[0]!r}); "
                                  "nan_guard=true skips the steps that produce them")
        self.save_model(path, model, tokenizer)
        try:
            torch.save(state, path / "trainer_state.tmp")
        except (OSError, RuntimeError) as e:  # torch's stream writer reports a full disk as a RuntimeError
            error = self._write_error(path, model, e)
            shutil.rmtree(path, ignore_errors=True)  # a model without its trainer state resumes nothing
            raise error from None
        (path / "trainer_state.tmp").rename(path / STATE)
        for old in self.complete()[:-self.keep]:  # complete ones: a partial never counts
            (old / STATE).unlink()  # first: a deletion cut short leaves no resumable-looking folder
            shutil.rmtree(old, ignore_errors=True)
        return path

    def save_model(self, path: Path, model, tokenizer) -> None:
        """``model`` and ``tokenizer`` as an HF folder at ``path``, replacing what it held only once complete."""
        from safetensors import SafetensorError
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a shard bar per save would drown the training progress bar
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with deepspeed_unimported():
                model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        except (OSError, RuntimeError, SafetensorError) as e:  # a full disk: keep what `path` held
            error = self._write_error(path, model, e)  # before the cleanup frees the space again
            shutil.rmtree(tmp, ignore_errors=True)
            raise error from None
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)

    def load_latest(self, model, device: torch.device) -> tuple[Path, dict[str, Any]] | None:
        """Load the newest complete checkpoint's weights into ``model``; its folder and state dict (None if none)."""
        ckpts = self.complete()
        if not ckpts:
            return None
        path = ckpts[-1]
        state = torch.load(path / STATE, map_location=device, weights_only=False)
        load_weights(model, path, device)
        bad = nonfinite_params(model)
        if bad:
            raise CheckpointError(f"cannot resume: {path} holds NaN/inf weights (first {bad[0]!r}); delete {path} "
                                  "to resume from the checkpoint before it (or from the start)")
        return path, state

    def _write_error(self, path: Path, model, e: Exception) -> CheckpointError:
        free = shutil.disk_usage(self.out).free
        # what save_pretrained writes (LoRA: the adapters)
        need = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or free < need:
            why = f"the disk is full ({_size(free)} free under {self.out}, the weights alone take {_size(need)})"
        else:
            why = f"{type(e).__name__}: {e}"
        older = [p for p in self.complete() if p.name != path.name]
        kept = f"the checkpoint before it, {older[-1]}, is intact" if older else "no earlier checkpoint exists"
        if path.name == "best" and path.exists():
            kept = f"{path} keeps the previous best policy"
        return CheckpointError(f"could not write {path}: {why}; {kept}")


def load_weights(model, path: Path, device: torch.device) -> None:
    """The weights of the HF folder ``path`` (a full model, or a PEFT checkpoint's adapters) into ``model``."""
    if (path / "adapter_model.safetensors").exists():  # a PEFT checkpoint holds the adapters only
        from peft import set_peft_model_state_dict

        state = _load_file(path / "adapter_model.safetensors", device)
        unexpected = set_peft_model_state_dict(model, state).unexpected_keys
        if unexpected:
            raise RuntimeError(f"adapter checkpoint {path} does not match the model: unexpected={unexpected}")
        return
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(_load_file(f, device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied lm_head is not saved
        raise RuntimeError(f"checkpoint {path} does not match the model: missing={missing}, "
                           f"unexpected={unexpected}")


def complete_checkpoints(out: Path) -> list[Path]:
    """The step checkpoints under ``out`` that a resume can use, oldest first (trainer_state.pt is renamed into
    place last, so a folder without it was cut short)."""
    return sorted(p for p in (out / "checkpoints").glob("step_*") if (p / STATE).exists())


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
