"""SFPOTrainer under real DeepSpeed ZeRO (stages 1-3, fp32 and bf16) on DeepSpeed's CPU accelerator over gloo.

Each configuration runs deepspeed_worker.py once (its own process: DeepSpeed owns the process group) and the tests
below check its scenarios: α=1 and α=0 bit-identical to GRPOTrainer under the same DeepSpeed config; α=0.8
bit-identical to GRPOTrainer whose K-th pass end is repositioned by the test through DeepSpeed's public API, with
θ̃ = θ0 + α(θK − θ0) on the masters to fp32 rounding and the module weights refreshed from them; a resume inside
a fast pass and inside the slow pass from DeepSpeed checkpoints equal to the uninterrupted run; two processes
launched by ``accelerate launch --use_deepspeed`` keep identical replicas with half the anchor each (slow).
"""

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("trl")

from sfpo.integrations.deepspeed import check_config  # noqa: E402

WORKER = Path(__file__).with_name("deepspeed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def ds_config(stage: int, bf16: bool, zero: dict | None = None, **top) -> dict:
    return {"zero_optimization": {"stage": stage, **({"stage3_param_persistence_threshold": 0} if stage == 3 else {}),
                                  **(zero or {})},
            "bf16": {"enabled": bf16}, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", **top}


EQUIV = ["alpha_one", "alpha_zero", "reposition"]
# id: (DeepSpeed config, scenarios). stage3_param_persistence_threshold=0 partitions every weight (the default
# 1e5 would keep all of this tiny model's weights gathered); "persistent" covers that path too.
CONFIGS = {
    "zero1-bf16": (ds_config(1, True), EQUIV),
    "zero2-fp32": (ds_config(2, False), EQUIV + ["resume", "refusal"]),
    "zero3-fp32": (ds_config(3, False), EQUIV),
    "zero3-bf16": (ds_config(3, True), EQUIV + ["resume"]),
    # slow: the other optimizer classes and paths
    "zero1-bf16-fp32accum": (ds_config(1, True, data_types={"grad_accum_dtype": "fp32"}), ["reposition"]),
    "zero2-offload": (ds_config(2, False, {"offload_optimizer": {"device": "cpu"}},
                                zero_force_ds_cpu_optimizer=False), ["alpha_one", "reposition"]),
    "zero3-offload-bf16": (ds_config(3, True, {"offload_optimizer": {"device": "cpu"},
                                               "offload_param": {"device": "cpu"}},
                                     zero_force_ds_cpu_optimizer=False), ["alpha_one", "reposition"]),
    "zero3-persistent": (ds_config(3, False, {"stage3_param_persistence_threshold": 100000}), ["reposition"]),
}
# the kill drill: SIGKILLs inside each stage of a checkpoint write, each resumed (slow)
CONFIGS.update({"zero2-kill": (ds_config(2, False), ["kill"]), "zero3-kill": (ds_config(3, False), ["kill"])})
FAST = ["zero1-bf16", "zero2-fp32", "zero3-fp32", "zero3-bf16"]
SLOW = [pytest.param(c, marks=pytest.mark.slow) for c in CONFIGS if c not in FAST and CONFIGS[c][1] != ["kill"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


@functools.cache
def results(config_id: str) -> dict:
    pytest.importorskip("deepspeed")

    config, scenarios = CONFIGS[config_id]
    out = Path(tempfile.mkdtemp(prefix=f"sfpo_ds_{config_id}_"))
    cmd = [sys.executable, str(WORKER), json.dumps(config), str(out), str(out / "result.json"), ",".join(scenarios)]
    proc = subprocess.run(cmd, env={**env(), "MASTER_PORT": str(free_port())}, capture_output=True, text=True,
                          timeout=600)
    try:
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads((out / "result.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)  # DeepSpeed checkpoints of every saved step


def check_reposition(r: dict, world_size: int = 1) -> None:
    assert r["repositions"] == 1 and r["moved"] > 1e-3  # the fast passes moved the masters
    # θ̃ = θ0 + α(θK − θ0) to fp32 rounding (a few ulps of max(|θ0|, |θK|); without the reposition: ~1e-2)
    assert r["formula_rel_err"] < 2 ** -21
    assert r["module_vs_master"] == [0.0]  # right after the refresh the module holds θ̃ in its own dtype
    # the slow pass ran from θ̃: bit-identical to GRPO repositioned by hand through DeepSpeed's API
    assert r["diff_manual"] == 0.0 and r["diff_no_reposition"] > 1e-3
    assert r["anchor_numel"] * world_size >= r["param_numel"]  # this rank's partition (ZeRO pads it)
    assert r["anchor_numel"] * world_size < r["param_numel"] + 64 * world_size


@pytest.mark.parametrize("config_id", FAST)
def test_alpha_one_is_bit_identical_to_grpo_with_k_plus_1_iterations(config_id):
    r = results(config_id)["alpha_one"]
    assert r["diff"] == 0.0 and len(r["drift"]) == 1 and r["drift"][0] > 0


@pytest.mark.parametrize("config_id", FAST)
def test_alpha_zero_is_bit_identical_to_grpo(config_id):
    assert results(config_id)["alpha_zero"]["diff"] == 0.0


@pytest.mark.parametrize("config_id", FAST + SLOW)
def test_reposition_acts_on_the_zero_masters_and_the_slow_pass_sees_it(config_id):
    r = results(config_id)["reposition"]
    check_reposition(r)
    expected = {"zero1-bf16-fp32accum": "BF16_Optimizer", "zero1-bf16": "DeepSpeedZeroOptimizer",
                "zero2-fp32": "DeepSpeedZeroOptimizer", "zero2-offload": "DeepSpeedZeroOptimizer"}
    assert r["zero"] == expected.get(config_id, "DeepSpeedZeroOptimizer_Stage3")


@pytest.mark.slow
@pytest.mark.parametrize("config_id", ["zero2-kill", "zero3-kill"])
def test_sigkill_inside_a_deepspeed_checkpoint_write_then_resume_equals_the_uninterrupted_run(config_id):
    r = results(config_id)["kill"]
    assert sorted(r) == ["ds_engine", "folder", "sfpo_state", "trainer_state", "weights"]
    for stage, s in r.items():
        assert s["returncode"] == -9, (stage, s["stderr"])
        assert s["partial"] is not None, stage  # the kill left checkpoint-5 behind, incomplete
        assert s["global_step"] == 6 and s["diff"] == 0.0, (stage, s)
    assert any(name.startswith("global_step") for name in r["ds_engine"]["partial"])  # inside DeepSpeed's own


@pytest.mark.parametrize("config_id", [c for c in FAST if "resume" in CONFIGS[c][1]])
def test_resume_mid_cycle_from_a_deepspeed_checkpoint_equals_the_uninterrupted_run(config_id):
    r = results(config_id)["resume"]
    assert r["diffs"] == {"3": 0.0, "11": 0.0}  # inside fast pass 2, inside the slow pass
    assert "sfpo_state_rank0.pt" in r["files"] and "global_step3" in r["files"]  # next to DeepSpeed's own


def test_unreachable_setups_are_refused_by_the_trainer():
    r = results("zero2-fp32")["refusal"]
    assert r["stage0"] and "stages 1-3, not stage 0" in r["stage0"]
    assert r["reset"] and "only 'carry'" in r["reset"]


@pytest.mark.parametrize("zero, match", [
    ({"stage": 0}, "not stage 0"),
    ({"stage": 3, "offload_optimizer": {"device": "nvme"}}, "NVMe"),
    ({"stage": 3, "offload_param": {"device": "nvme"}}, "NVMe"),
    ({"stage": 2, "zenflow": {"topk_ratio": 0.1}}, "ZenFlow"),
    ({"stage": 3, "offload_optimizer": {"device": "cpu", "super_offload": True}}, "SuperOffload"),
    ({"stage": 3, "zero_quantized_weights": True}, "quantized"),
])
def test_check_config_refuses_what_a_reposition_cannot_reach(zero, match):
    with pytest.raises(NotImplementedError, match=match):
        check_config({"zero_optimization": zero}, "carry")
    check_config({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}, "carry")  # allowed


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_processes_under_accelerate_launch_keep_identical_replicas(tmp_path, stage):
    pytest.importorskip("deepspeed")
    config = ds_config(stage, False)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed", "--deepspeed_config_file",
           str(path), "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
           "--dynamo_backend", "no", str(WORKER), json.dumps(config), str(tmp_path / "out"),
           str(tmp_path / "result.json"), "replicas,reposition"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads((tmp_path / "result.json").read_text())
    rep = r["replicas"]
    assert rep["world_size"] == 2 and rep["replica_diff"] == 0.0 and rep["phase"] == "fast"
    assert rep["anchor_numel_per_rank"][0] == rep["anchor_numel_per_rank"][1] < rep["param_numel"]
    assert len(rep["drift"]) == 1 and rep["drift"][0] > 0
    check_reposition(r["reposition"], world_size=2)


def test_an_optimizer_whose_masters_are_unknown_is_refused():
    pytest.importorskip("deepspeed")
    import torch

    from sfpo.integrations.deepspeed import ZeroPartitions

    class Wrapper:  # accelerate's wrapper around something that is not one of ZeRO's optimizers
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)

    with pytest.raises(NotImplementedError, match="does not know where DeepSpeed's SGD keeps its master weights"):
        ZeroPartitions(Wrapper())
