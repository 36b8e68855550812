"""A cluster's signals and neighbours: SIGTERM/SIGINT anywhere in a step (the update, the rollout, a checkpoint
write) save the last completed step and exit 143/130, and the rerun ends bit-identical to an uninterrupted run
with no completed step lost; a second signal exits at once and leaves no usable-looking damage; one training run
per output folder, and ``sfpo eval`` reads a folder in training but writes nothing there."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import sfpo.trainer
from sfpo.cli import main
from sfpo.runlock import LOCK_NAME, RunLock, holder
from test_eval import COUNTS, fake, make_run  # noqa: F401 — fake is a fixture
from preempt_worker import parse_plan, train_argv, trainer_factory
from test_trainer import BASE
from tiny import ToyTask, make_model, make_tokenizer

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src")]), "OMP_NUM_THREADS": "1"}


def _run(out: Path, *args: str, wait: bool = True):
    """The worker in its own process: real signals, real exit codes, os._exit on a second signal."""
    proc = subprocess.Popen([sys.executable, str(HERE / "preempt_worker.py"), str(out), *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def _train(out: Path, *args: str, capsys=None):
    """The same run in this process (the handlers work the same; only a second signal needs a process of its
    own): `sfpo train`'s exit status and stderr."""
    saved = sfpo.trainer.Trainer
    sfpo.trainer.Trainer = trainer_factory(parse_plan(args), saved)
    try:
        code = main(train_argv(out, [a for a in args if "=" in a]))
    finally:
        sfpo.trainer.Trainer = saved
    return code, capsys.readouterr().err if capsys else ""


def _final(out: Path):
    last = sorted((out / "checkpoints").glob("step_*"))[-1]
    metrics = [{k: v for k, v in json.loads(ln).items() if not k.startswith("time/")}
               for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return last.name, load_file(str(last / "model.safetensors")), metrics


def _same(a: Path, b: Path) -> None:
    name, weights, metrics = _final(a)
    ref_name, ref_weights, ref_metrics = _final(b)
    assert name == ref_name
    assert weights.keys() == ref_weights.keys()
    assert [k for k in weights if not weights[k].equal(ref_weights[k])] == []
    assert metrics == ref_metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "full"
    assert _train(out)[0] == 0
    return out


@pytest.mark.parametrize("plan, extra, stopped_after", [
    ("TERM:update:3", [], 3),          # inside step 3's update: step 3 finishes and is saved
    ("INT:update:5", [], 5),           # Ctrl-C, as above
    ("TERM:rollout:3", [], 2),         # rollouts: validation at step 0, step 1, step 2 → inside step 2
    ("TERM:save:1", ["checkpoint_every=2"], 2),  # inside step 2's checkpoint write: that write completes
    ("TERM:rollout:1", [], 0),         # inside the step-0 validation: no step completed, nothing to save
])
def test_signal_saves_the_last_completed_step_and_resume_is_bit_identical(tmp_path, reference, plan, extra,
                                                                             stopped_after, capsys):
    out = tmp_path / "run"
    code, err = _train(out, plan, *extra, capsys=capsys)
    sig = signal.SIGINT if plan.startswith("INT") else signal.SIGTERM
    assert code == 128 + sig, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"preempted: stopped by {sig.name}") and "rerun the same command to resume" in last
    assert "Traceback" not in err
    rows = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1] == stopped_after  # the step in flight was finished and logged
    saved = sorted(p.name for p in (out / "checkpoints").glob("step_*") if (p / "trainer_state.pt").exists()) \
        if (out / "checkpoints").exists() else []
    if stopped_after:
        assert f"after step {stopped_after}: saved {out / 'checkpoints' / f'step_{stopped_after:06d}'}" in last
        assert saved[-1] == f"step_{stopped_after:06d}"  # 0 completed steps lost
    else:
        assert "nothing new to save" in last and saved == []
    assert _train(out, *extra)[0] == 0
    _same(out, reference)


@pytest.mark.slow
def test_second_signal_exits_at_once_and_the_rerun_is_still_exact(tmp_path, reference):
    out = tmp_path / "run"
    # first SIGTERM inside step 3's update; the second inside the checkpoint it triggers (save 2: save 1 is the
    # periodic step-2 checkpoint), after the weights and before trainer_state.pt
    code, _, err = _run(out, "TERM:update:3", "TERM:save:2", "checkpoint_every=2")
    assert code == 143, err[-3000:]
    assert "SIGTERM again: exiting now" in err and "Traceback" not in err
    partial = out / "checkpoints" / "step_000003"
    assert partial.exists() and not (partial / "trainer_state.pt").exists()  # cut short: never resumed from
    code, _, err = _run(out, "checkpoint_every=2")
    assert code == 0, err[-3000:]
    assert "removing" in err and "step_000003" in err
    _same(out, reference)


@pytest.mark.slow
def test_sigterm_and_sigint_at_random_moments_lose_no_completed_step(tmp_path, reference):
    """Signals at seeded random times (wherever they land: rollout, update, validation, a checkpoint write),
    alternating SIGTERM and SIGINT, until the run finishes; after each stop the newest checkpoint is the last
    step in metrics.jsonl."""
    rng = random.Random(27)
    out, stops, repeats = tmp_path / "run", [], 0
    args = ["steps=24", "rollout.num_prompts=8", "checkpoint_every=5"]  # long enough for several signals
    code, _, err = _run(tmp_path / "full", *args)
    assert code == 0, err[-3000:]
    # the steps' own time (a process's start-up and teardown are not training): a signal lands among the steps
    span = json.loads((tmp_path / "full" / "summary.json").read_text())["train_time"]
    for attempt in range(8):
        proc = _run(out, *args, wait=False)
        assert proc.stdout.readline().startswith("training")
        time.sleep(rng.uniform(0.05, 0.3) * span * 2 ** repeats)
        sig = (signal.SIGTERM, signal.SIGINT)[attempt % 2]
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0 or (out / "summary.json").exists():
            break  # finished; a signal after the handlers were gone (process teardown) found nothing to stop
        assert proc.returncode == 128 + sig, err[-3000:]
        rows = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
        ckpts = sorted(p.name for p in (out / "checkpoints").glob("step_*") if (p / "trainer_state.pt").exists()) \
            if (out / "checkpoints").exists() else []
        assert (ckpts[-1] if ckpts else "step_000000") == f"step_{rows[-1]:06d}", (rows, ckpts)  # 0 steps lost
        repeats = repeats + 1 if stops and stops[-1] == rows[-1] or rows[-1] == 0 else 0
        stops.append(rows[-1])
    assert len(stops) >= 3 and len(set(stops) - {0}) >= 2, stops
    if not (out / "summary.json").exists():  # the last requeue runs to the end
        code, _, err = _run(out, *args)
        assert code == 0, err[-3000:]
    _same(out, tmp_path / "full")


# ---------------------------------------------------------------------------------------- one run per folder
def _hold(out: Path) -> subprocess.Popen:
    """Another process that holds ``out``'s training lock until killed."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom sfpo.runlock import RunLock\n"
            f"RunLock.acquire(Path({str(out)!r}))\nprint('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def tiny_cli(monkeypatch, tmp_path):
    def build(cfg):
        tok = make_tokenizer()
        return sfpo.trainer.Trainer.__wrapped__(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask())
    build.__wrapped__ = sfpo.trainer.Trainer
    monkeypatch.setattr(sfpo.trainer, "Trainer", build)
    config = tmp_path / "c.yaml"
    config.write_text("algorithm:\n  name: grpo\n")
    return lambda out, *o: main(["train", str(config), *BASE, "steps=2", f"output_dir={out}", *o])


def test_a_second_run_on_a_folder_in_training_exits_2_naming_the_holder(tmp_path, tiny_cli, capsys):
    out = tmp_path / "run"
    out.mkdir()
    other = _hold(out)
    try:
        assert tiny_cli(out) == 2
        err = capsys.readouterr().err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"error: output_dir {out.resolve()} is in use by another training run")
        assert f"pid {other.pid} on host {socket.gethostname()}" in line
        assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()  # nothing touched
        assert holder(out) is not None
    finally:
        other.kill()  # SIGKILL: no chance to clean up, and yet the lock goes with it
        other.wait()
    assert holder(out) is None
    assert tiny_cli(out) == 0
    assert holder(out) is None  # released when training ended


def test_the_lock_is_per_process_and_released_after_training(tmp_path):
    a = RunLock.acquire(tmp_path)
    assert RunLock.acquire(tmp_path) is a  # a Trainer rebuilt in the same session on the same folder
    assert "pid" in holder(tmp_path) and (tmp_path / LOCK_NAME).exists()
    a.release()
    assert holder(tmp_path) is None


def test_sfpo_eval_on_a_folder_in_training_reads_and_never_writes(tmp_path, fake, capsys):  # noqa: F811
    fake["counts"].update(COUNTS)
    run = make_run(tmp_path / "run")
    other = _hold(run)
    try:
        before = sorted(p.name for p in run.iterdir())
        assert main(["eval", str(run), "--task", "key", "--no-progress"]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"is being trained (pid {other.pid}" in line and "pass --output" in line
        assert sorted(p.name for p in run.iterdir()) == before
        assert main(["eval", str(run), "--task", "key", "--no-progress", "--output", str(tmp_path / "e")]) == 0
        assert (tmp_path / "e" / "eval.json").exists() and sorted(p.name for p in run.iterdir()) == before
    finally:
        other.kill()
        other.wait()
