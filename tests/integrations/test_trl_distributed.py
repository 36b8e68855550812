"""Two CPU processes over gloo. DDP through ``accelerate launch``: after SFPO steps the replicas' weights and
anchors are identical, while each rank trained on its own prompts. FSDP2 (the Trainer cannot shard on CPU): the
tensors SFPOTrainer hands to the core are shards, and repositioning them repositions the full parameters."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_keep_identical_replicas(tmp_path):
    result = tmp_path / "result.json"
    # --multi_gpu picks torchrun; without CUDA accelerate then runs MULTI_CPU over gloo (--cpu would run 1 process)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(WORKER), str(tmp_path / "out"), str(result)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r["world_size"] == 2 and r["ranks_saw_different_prompts"]
    assert r["weights_max_diff"] == 0.0 and r["anchor_max_diff"] == 0.0
    assert r["moved"] > 0 and len(r["drift_norms"]) == 2 and r["phase"] == "fast"
    assert r["generations_per_rank"] == [3, 3]  # two finished steps and the one in progress


def test_fsdp2_reposition_on_local_shards_acts_on_the_full_parameters(tmp_path):
    result = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(WORKER.with_name("fsdp2_worker.py")), str(result)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r["sharded"] and r["local_numel"] < r["full_numel"]  # the anchor holds this rank's shard only
    assert r["lerp_errors"] == [0.0, 0.0] and min(r["moved"]) > 0
