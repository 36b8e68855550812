"""Faults and bad input, each as a user meets it: a diverging update never reaches a checkpoint, a run that only
skips steps stops and says so, a full disk keeps the previous checkpoint, and each mistake gets one line that
names it (exit 2), before a model is loaded where the mistake can be seen without one."""

import errno
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import sfpo.checkpointing
import sfpo.trainer
from sfpo.cli import main
from sfpo.trainer import CheckpointError, TrainingStalled, Trainer
from test_trainer import BASE, NaNTask, run
from tiny import ToyTask, make_model, make_tokenizer

TINY_CLI = [o for o in BASE if not o.startswith("optim.lr")] + ["optim.lr=1e-2", "steps=1"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


# ------------------------------------------------------------------------------------ diverging updates
@pytest.mark.parametrize("lr, why", [("1e30", "overflows float32"), ("10", "max_update_ratio")])
def test_exploding_update_is_skipped_and_never_checkpointed(tmp_path, caplog, lr, why):
    # one mini-batch: the exploded weights are never run forward inside the step, so only a weight check sees them
    start = {n: p.detach().clone() for n, p in make_model(make_tokenizer()).named_parameters()}
    trainer, summary, _ = run(tmp_path, ["algorithm.name=grpo", f"optim.lr={lr}", "optim.mini_batches=1",
                                         "checkpoint_every=1", "max_consecutive_skips=0"], steps=2)
    assert summary["nan_skips"] == 2
    assert "the update exploded" in caplog.text and why in caplog.text
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), start[n]), n
    saved = _weights(tmp_path / "run" / "checkpoints" / "step_000002")
    assert all(torch.equal(saved[n], start[n]) for n in saved)


def test_a_checkpoint_is_never_written_from_nonfinite_weights(tmp_path):
    trainer, _, _ = run(tmp_path, ["algorithm.name=grpo", "nan_guard=false"], steps=1)
    ckpt = tmp_path / "run" / "checkpoints" / "step_000001"
    before = _weights(ckpt)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(math.nan)
    with pytest.raises(CheckpointError, match=r"not writing .*step_000001: NaN/inf weights in 1 tensor \(first"):
        trainer.save_checkpoint()
    after = _weights(ckpt)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert (ckpt / "trainer_state.pt").exists()


def test_resume_follows_a_changed_learning_rate(tmp_path):
    # the way out of a run stopped on exploding updates: lower optim.lr and rerun into the same folder
    run(tmp_path, ["algorithm.name=grpo"], steps=2)
    _, _, records = run(tmp_path, ["algorithm.name=grpo", "optim.lr=1e-3"], steps=3)
    assert [r["lr"] for r in records if "lr" in r] == [1e-2, 1e-2, 1e-3]


# ---------------------------------------------------------------------------------------- skipped steps
def test_consecutive_skips_stop_the_run_and_the_summary_says_why(tmp_path):
    with pytest.raises(TrainingStalled, match=r"2 steps in a row were skipped \(steps 1-2\), the last because "
                                              r"loss=nan"):
        run(tmp_path, ["algorithm.name=sfpo", "max_consecutive_skips=2"], task=NaNTask(), steps=5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["nan_skips"] == 2 and summary["steps"] == 1 and "in a row were skipped" in summary["stopped"]


@pytest.fixture
def cli_trainer(monkeypatch):
    """``sfpo train`` on the tiny model, with the task a test chooses."""
    chosen = {"task": ToyTask()}

    def build(cfg):
        tok = make_tokenizer()
        return Trainer(cfg, model=make_model(tok), tokenizer=tok, task=chosen["task"])

    monkeypatch.setattr(sfpo.trainer, "Trainer", build)
    return chosen


def _train_cli(tmp_path, *overrides, config=None):
    if config is None:
        config = tmp_path / "c.yaml"
        config.write_text("algorithm:\n  name: grpo\n")
    return main(["train", str(config), *TINY_CLI, f"output_dir={tmp_path / 'out'}", *overrides])


def test_exit_code_tells_that_steps_were_skipped(tmp_path, cli_trainer, capsys):
    assert _train_cli(tmp_path, "steps=2", "output_dir=" + str(tmp_path / "ok")) == 0
    cli_trainer["task"] = NaNTask()
    assert _train_cli(tmp_path, "steps=2", "max_consecutive_skips=0") == 3
    assert "warning: 2 of 2 steps were skipped" in capsys.readouterr().err
    assert _train_cli(tmp_path, "steps=4", "output_dir=" + str(tmp_path / "stop"), "max_consecutive_skips=2") == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert "training stopped: 2 steps in a row were skipped" in line


def test_update_extra_mb_of_a_run_resumed_at_its_last_step(tmp_path):
    _, first, _ = run(tmp_path, ["algorithm.name=sfpo"], steps=2)
    trainer, again, _ = run(tmp_path, ["algorithm.name=sfpo"], steps=2)
    assert again["steps"] == 2 and trainer.update.extra_bytes() == 0  # no step taken: no anchor allocated
    assert again["update_extra_mb"] == first["update_extra_mb"] > 0


def test_a_partial_checkpoint_never_pushes_a_complete_one_out(tmp_path):
    partial = tmp_path / "run" / "checkpoints" / "step_000009"  # what a kill inside a write of step 9 leaves
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    run(tmp_path, ["algorithm.name=grpo", "checkpoint_every=1", "keep_checkpoints=2"], steps=3)
    complete = sorted(p.name for p in partial.parent.iterdir() if (p / "trainer_state.pt").exists())
    assert complete == ["step_000002", "step_000003"]
    assert not partial.exists()  # removed by the run that found it, not left for every later run to skip


def test_what_a_kill_inside_a_rotation_or_a_write_left_is_removed_and_nothing_complete(tmp_path):
    run(tmp_path, ["algorithm.name=grpo", "checkpoint_every=1", "keep_checkpoints=3"], steps=3)
    root = tmp_path / "run" / "checkpoints"
    (root / "step_000001" / "trainer_state.pt").unlink()  # rotation unlinks this first, then the folder
    shutil.copytree(root / "step_000002", root / "step_000004.tmp")  # save_pretrained cut short
    shutil.copytree(root / "step_000002", tmp_path / "run" / "best.tmp")
    trainer, _, _ = run(tmp_path, ["algorithm.name=grpo", "checkpoint_every=1", "keep_checkpoints=3"], steps=3)
    assert trainer.step == 3  # resumed from the newest complete checkpoint, which was kept
    assert sorted(p.name for p in root.iterdir()) == ["step_000002", "step_000003"]
    assert not (tmp_path / "run" / "best.tmp").exists() and (tmp_path / "run" / "best").exists()


# ---------------------------------------------------------------------------------------------- a full disk
@pytest.mark.parametrize("where", ["trainer_state", "weights"])
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, where):
    trainer, _, _ = run(tmp_path, ["algorithm.name=grpo"], steps=1)
    trainer.train_step()
    trainer.step += 1
    if where == "trainer_state":  # what torch's stream writer says when the disk fills up under it
        def save(*a, **k):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 3724288 vs 3724180")
        monkeypatch.setattr(sfpo.checkpointing.torch, "save", save)
        monkeypatch.setattr(sfpo.checkpointing.shutil, "disk_usage", lambda p: SimpleNamespace(free=1024))
    else:
        def save_pretrained(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(trainer.model, "save_pretrained", save_pretrained)
    with pytest.raises(CheckpointError, match=r"could not write .*step_000002: the disk is full .*the checkpoint "
                                              r"before it, .*step_000001, is intact"):
        trainer.save_checkpoint()
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"]
    monkeypatch.undo()
    resumed, _, _ = run(tmp_path, ["algorithm.name=grpo"], steps=1)
    assert resumed.step == 1


# ------------------------------------------------------------------------------------- one line, exit 2
@pytest.fixture
def tiny_dir(tmp_path):
    tok = make_tokenizer()
    folder = tmp_path / "tiny"
    make_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return line


def _no_model_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the mistake was reported")
    monkeypatch.setattr(sfpo.trainer, "load_policy", refuse)


def _truncate(f: Path) -> None:
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)


def _poison(folder: Path) -> None:
    from safetensors.torch import save_file

    state = _weights(folder)
    state[sorted(state)[0]] = torch.full_like(state[sorted(state)[0]], math.nan)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _model_path_case(case, tmp_path, tiny_dir):
    if case == "missing":
        return tmp_path / "no" / "such" / "model", "does not exist"
    if case == "empty":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", "is not a saved model: the folder has no config.json (it is empty)"
    if case == "no_tokenizer":
        for f in tiny_dir.glob("tokenizer*"):
            f.unlink()
        return tiny_dir, "has no tokenizer"
    if case == "truncated":
        _truncate(tiny_dir / "model.safetensors")
        return tiny_dir, "model.safetensors is truncated or corrupt"
    _poison(tiny_dir)
    return tiny_dir, "holds non-finite weights (NaN/inf) in 1 tensor, first"


@pytest.mark.parametrize("case", ["missing", "empty", "no_tokenizer", "truncated", "nonfinite"])
def test_model_path_mistakes(tmp_path, tiny_dir, capsys, case):
    path, message = _model_path_case(case, tmp_path, tiny_dir)
    (tmp_path / "c.yaml").write_text("{}\n")
    assert main(["train", str(tmp_path / "c.yaml"), *TINY_CLI, f"model.path={path}",
                 f"output_dir={tmp_path / 'out'}"]) == 2
    assert message in _error_line(capsys)


@pytest.mark.parametrize("content, message", [("", "is empty"), ("not json\n[1, 2]\n",
                                                                  "has no parseable row (2 rows, none a JSON object)")])
def test_dataset_file_without_rows(tmp_path, monkeypatch, capsys, content, message):
    _no_model_load(monkeypatch)
    data = tmp_path / "d.jsonl"
    data.write_text(content)
    (tmp_path / "c.yaml").write_text(f"task:\n  name: math-dataset\n  kwargs:\n    data_files: {data}\n")
    assert main(["train", str(tmp_path / "c.yaml"), f"output_dir={tmp_path / 'out'}"]) == 2
    assert f"{data}' {message}" in _error_line(capsys)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write: mode 555, or for root (who ignores modes) a read-only tmpfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("running as root, and a read-only mount is not allowed here")
    yield ro
    subprocess.run(["umount", str(ro)], check=True)


def test_read_only_output_dir(tmp_path, read_only_dir, monkeypatch, capsys):
    _no_model_load(monkeypatch)
    ro = read_only_dir
    assert main(["train", str(Path(__file__).parents[1] / "configs" / "demo.yaml"), f"output_dir={ro / 'x'}"]) == 2
    assert "is not writable" in _error_line(capsys)


@pytest.mark.parametrize("under", [False, True])
def test_output_dir_that_is_a_file(tmp_path, monkeypatch, capsys, under):
    _no_model_load(monkeypatch)
    f = tmp_path / "a_file"
    f.write_text("x")
    out = f / "run" if under else f
    assert main(["train", str(Path(__file__).parents[1] / "configs" / "demo.yaml"), f"output_dir={out}"]) == 2
    assert (f"lies under {f}, which is a file" if under else f"output_dir {f} is a file") in _error_line(capsys)


def test_another_algorithm_into_an_existing_run(tmp_path, cli_trainer, monkeypatch, capsys):
    assert _train_cli(tmp_path, "algorithm.name=sfpo", "algorithm.switch=entropy") == 0
    _no_model_load(monkeypatch)
    monkeypatch.setattr(sfpo.trainer, "Trainer", Trainer)  # the real one: the refusal must come before any model
    assert _train_cli(tmp_path, "algorithm.name=grpo") == 2
    line = _error_line(capsys)
    assert "holds another run: step_000001 was saved by a run with algorithm=sfpo, switch=entropy" in line
    assert "this one has algorithm=grpo, switch=never" in line and "Use another output_dir" in line


@pytest.mark.parametrize("damage", ["truncated", "nonfinite"])
def test_damaged_checkpoint_on_resume(tmp_path, cli_trainer, capsys, damage):
    assert _train_cli(tmp_path) == 0
    ckpt = tmp_path / "out" / "checkpoints" / "step_000001"
    _truncate(ckpt / "model.safetensors") if damage == "truncated" else _poison(ckpt)
    assert _train_cli(tmp_path, "steps=2") == 2
    line = _error_line(capsys)
    assert "cannot resume:" in line and f"delete {ckpt}" in line
    assert ("model.safetensors is truncated or corrupt" if damage == "truncated" else "NaN/inf weights") in line


@pytest.mark.parametrize("damage", ["truncated", "nonfinite"])
def test_damaged_checkpoint_in_sfpo_eval(tmp_path, tiny_dir, capsys, damage):
    _truncate(tiny_dir / "model.safetensors") if damage == "truncated" else _poison(tiny_dir)
    assert main(["eval", str(tiny_dir), "--task", "arithmetic", "--num-prompts", "2", "--no-progress",
                 "--output", str(tmp_path / "eval")]) == 2
    line = _error_line(capsys)
    assert ("model.safetensors is truncated or corrupt" if damage == "truncated" else "non-finite weights") in line


def test_malformed_yaml_names_its_file_and_place(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n warmup_steps: 3\n")
    assert main(["train", str(bad)]) == 2
    line = _error_line(capsys)
    assert f"{bad} is not valid YAML (line 3, column 2)" in line and "<unicode string>" not in line
