"""The native trainer under SIGKILLs at random moments (inside checkpoint writes too): rerun until it finishes,
the final weights and every logged metric equal those of an uninterrupted run, bit for bit."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src")]),
           "OMP_NUM_THREADS": "1"}
    with open(out.with_name(out.name + ".log"), "a") as log:  # the workers' stderr, for a failure's message
        return subprocess.Popen([sys.executable, str(HERE / "drill_worker.py"), str(out)], env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True)


def _log(out: Path) -> str:
    return out.with_name(out.name + ".log").read_text()[-3000:]


def _final(out: Path):
    last = sorted((out / "checkpoints").glob("step_*"))[-1]
    metrics = [{k: v for k, v in json.loads(ln).items() if not k.startswith("time/")}
               for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return last.name, load_file(str(last / "model.safetensors")), metrics


@pytest.mark.slow
def test_sigkills_at_random_moments_then_resume_equal_the_uninterrupted_run(tmp_path):
    full = _start(tmp_path / "full")
    assert full.stdout.readline().startswith("training"), _log(tmp_path / "full")
    t0 = time.perf_counter()
    assert full.wait(timeout=900) == 0, _log(tmp_path / "full")
    # Kill moments scale with how long training takes on this machine (a fixed 0-2.5 s let a quiet machine finish
    # the whole run before the second kill): each kill lands within the first quarter of a full run's time, so
    # three kills cannot be outrun, and a checkpoint every step keeps the progress between them.
    span = time.perf_counter() - t0
    rng = random.Random(0)
    out, kills, starts = tmp_path / "killed", 0, []
    stalled = 0
    for attempt in range(20):
        proc = _start(out)
        line = proc.stdout.readline()  # "training <step>": built, resumed, about to train
        assert line.startswith("training"), _log(out)
        starts.append(int(line.split()[1]))
        # a kill that came before the next checkpoint (a busy machine slows a resumed run more than the full run
        # was slowed) doubles the next wait, so that the drill resumes from several checkpoints on any machine
        stalled = stalled + 1 if len(starts) > 1 and starts[-1] == starts[-2] else 0
        time.sleep(rng.uniform(0.05, 0.25) * span * 2**stalled)
        if proc.poll() is None and kills < 5:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        if proc.wait(timeout=900) == 0:
            break
        assert proc.returncode == -signal.SIGKILL, _log(out)
    assert kills >= 3, "the run finished before the drill could kill it a few times"
    assert len(set(starts) - {0}) >= 2, f"resumed from too few checkpoints: {starts}"
    name, weights, metrics = _final(out)
    full_name, full_weights, full_metrics = _final(tmp_path / "full")
    assert name == full_name == "step_000024"
    assert weights.keys() == full_weights.keys()
    assert [k for k in weights if not weights[k].equal(full_weights[k])] == []
    assert metrics == full_metrics
