"""SFPOTrainer on a cluster: SIGTERM/SIGINT save the optimizer step in flight and stop with exit status 143/130,
and the resume ends bit-identical to an uninterrupted run; a run resumed from its finished checkpoint trains
nothing more (transformers alone runs one extra optimizer step there)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from transformers import TrainerCallback  # noqa: E402

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer  # noqa: E402
from sfpo.preemption import Preempted  # noqa: E402
from tiny_trl import train, weights  # noqa: E402

# as test_trl.py's resume tests: 2 SFPO steps of 3 passes × 2 optimizer steps, the switch, then plain steps
RUN = dict(inner_steps=2, steps_per_generation=4, max_steps=14, switch="entropy", switch_window=2,
           switch_threshold=0.5, switch_two_sided=True, lr_scheduler_type="linear")


class SignalAt(TrainerCallback):
    """Sends ``sig`` to this process inside optimizer step ``step`` (after the optimizer, before the step ends)."""

    def __init__(self, step: int, sig: int):
        self.step, self.sig = step, sig

    def on_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, train(SFPOTrainer, SFPOConfig, out, save_strategy="steps", save_steps=14, **RUN)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert [n for n in a if not a[n].equal(b[n])] == []


@pytest.mark.parametrize("step, sig", [(5, signal.SIGTERM), (8, signal.SIGINT)])  # inside a fast pass, a slow one
def test_a_signal_saves_the_step_in_flight_and_the_resume_is_bit_identical(tmp_path, uninterrupted, step, sig,
                                                                          caplog):
    _, full = uninterrupted
    with pytest.raises(Preempted) as stopped, caplog.at_level(logging.WARNING):
        train(SFPOTrainer, SFPOConfig, tmp_path, callbacks=[SignalAt(step, sig)], **RUN)  # save_strategy "no"
    assert stopped.value.code == 128 + sig
    saved = sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint-"))
    assert saved == [f"checkpoint-{step}"]  # the step in flight finished and was saved: 0 steps lost
    assert f"stopped by {sig.name} after step {step}" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    resumed = train(SFPOTrainer, SFPOConfig, tmp_path, resume=True, **RUN)
    assert resumed.state.global_step == 14
    _same(weights(full), weights(resumed))
    assert resumed.switch.state_dict() == full.switch.state_dict()


def test_the_callback_serves_a_plain_transformers_trainer_too(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from sfpo.integrations.preemption import PreemptionCallback

    callback = PreemptionCallback()
    trainer = train(GRPOTrainer, GRPOConfig, tmp_path, callbacks=[callback, SignalAt(3, signal.SIGTERM)],
                    max_steps=8)
    assert trainer.state.global_step == 3
    with pytest.raises(Preempted) as stopped:
        callback.raise_if_preempted(trainer)
    assert stopped.value.code == 143 and stopped.value.checkpoint == str(tmp_path / "checkpoint-3")
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint-")) == ["checkpoint-3"]


def test_resuming_a_finished_run_trains_nothing_more(tmp_path, uninterrupted, caplog):
    out, full = uninterrupted
    with caplog.at_level(logging.INFO, logger="sfpo.integrations.trl"):
        again = train(SFPOTrainer, SFPOConfig, out, resume=True, save_strategy="steps", save_steps=14, **RUN)
    assert again.state.global_step == 14
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-14"]
    _same(weights(full), weights(again))
    assert "already reached max_steps=14: nothing left to train" in caplog.text


def test_two_ranks_stop_at_the_same_step_when_one_is_signalled(tmp_path):
    """Only rank 1 gets SIGTERM (a scheduler may signal one process first): without the flag reduced over the
    ranks, rank 0 would enter the next step and wait forever in its all-reduce."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(Path(__file__).with_name("preempt_ddp_worker.py")), str(tmp_path / "out"), str(tmp_path)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"code": 143, "global_step": 3}] * 2, proc.stderr[-3000:]
    assert proc.returncode != 0  # the launcher passes the workers' 143 on as a failure to requeue
    assert sorted(n for n in os.listdir(tmp_path / "out") if n.startswith("checkpoint-")) == ["checkpoint-3"]
