"""A SIGKILL at each stage of writing a TRL checkpoint leaves a partial folder; resume_from_checkpoint=True skips
it with a warning and continues from the newest complete checkpoint, bit-identically to an uninterrupted run."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer  # noqa: E402
from kill_worker import RUN  # noqa: E402
from test_trl import assert_same_weights  # noqa: E402
from tiny_trl import train, weights  # noqa: E402

HERE = Path(__file__).resolve().parent
KILL_AT = 5  # inside the slow pass of the first SFPO step (optimizer steps 1-6): the anchor travels with it


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(SFPOTrainer, SFPOConfig, tmp_path_factory.mktemp("full"), **RUN)


@pytest.mark.parametrize("stage", ["folder", pytest.param("weights", marks=pytest.mark.slow),
                                   pytest.param("sfpo_state", marks=pytest.mark.slow), "trainer_state"])
def test_kill_inside_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path, uninterrupted, caplog, stage):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), str(HERE.parents[1] / "src")])}
    proc = subprocess.run([sys.executable, str(HERE / "kill_worker.py"), str(out), str(KILL_AT), stage], env=env,
                          timeout=600, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / f"checkpoint-{KILL_AT}").is_dir() and (out / f"checkpoint-{KILL_AT - 1}").is_dir()
    with caplog.at_level(logging.WARNING, logger="sfpo.integrations.trl"):
        resumed = train(SFPOTrainer, SFPOConfig, out, resume=True, **RUN)
    assert f"skipping incomplete checkpoint(s) checkpoint-{KILL_AT} in {out}" in caplog.text
    assert f"resuming from checkpoint-{KILL_AT - 1}" in caplog.text
    assert_same_weights(weights(uninterrupted), weights(resumed))


def test_only_incomplete_checkpoints_is_one_clear_error(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(ValueError, match=r"no complete checkpoint in .*: checkpoint-3 were interrupted"):
        train(SFPOTrainer, SFPOConfig, tmp_path, resume=True, **RUN)
