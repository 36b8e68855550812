"""SFPO in verl 0.9 (sfpo.integrations.verl), on CPU in the verl env (benchmarks/verl_env.sh; marker ``verl``).

The contract runs verl's real TrainingWorker loop (FSDP2, gloo, 1 and 2 ranks) under the SFPO worker against plain
verl workers from the same weights; the Ray test runs a worker group; the driver tests use verl's real trainer
methods (update, checkpoint save/load) with the worker group and data loader stubbed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.verl
verl = pytest.importorskip("verl")

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), str(ROOT / "src")])}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen2")
    code = f"import verl_cpu; verl_cpu.save_tiny_qwen2({str(path)!r})"
    subprocess.run([sys.executable, "-c", code], env=ENV, check=True, capture_output=True, cwd=HERE)
    return str(path)


def verl_config(*overrides):
    """verl's own ppo_trainer config (as main_ppo composes it) with the paper's SFPO group and ``overrides``."""
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    paper = ["trainer.v1.trainer_mode=sfpo", "+sfpo.inner_steps=3", "+sfpo.alpha=0.8", "+sfpo.switch_window=30",
             "actor_rollout_ref.actor.strategy=fsdp2", "actor_rollout_ref.actor.entropy_coeff=0.001"]
    set_in_paper = {o.split("=")[0] for o in paper}
    overrides = [o[1:] if o.startswith("+") and o.split("=")[0] in set_in_paper else o  # "+" adds, cannot set
                 for o in overrides]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=paper + overrides)


# ------------------------------------------------------------------------------------------------ plugin, config
def test_plugin_loads_from_import_verl():
    code = ("import sys, verl; from verl.trainer.ppo.v1 import get_trainer_cls; "
            "print(get_trainer_cls('sfpo').__module__, 'sfpo.integrations.verl.worker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env={**ENV, "VERL_USE_EXTERNAL_PLUGINS": "auto"},
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["sfpo.integrations.verl.trainer", "True"]


def test_paper_config_is_accepted():
    from sfpo.integrations.verl import check_verl_config

    sfpo = check_verl_config(verl_config())
    assert (sfpo.inner_steps, sfpo.alpha, sfpo.switch, sfpo.switch_window) == (3, 0.8, "entropy", 30)
    assert sfpo.plan(active=False) == {"inner_steps": 3, "alpha": 0.8, "optimizer_state": "carry", "active": False}


@pytest.mark.parametrize("overrides, error, words", [
    (["actor_rollout_ref.actor.ppo_epochs=2"], ValueError, "SFPO sets the passes over each rollout batch itself"),
    (["actor_rollout_ref.actor.entropy_coeff=0"], ValueError, "verl computes only with"),
    (["actor_rollout_ref.actor.strategy=megatron"], NotImplementedError, "fp32 main parameters inside the optimizer"),
    (["actor_rollout_ref.actor.strategy=veomni"], NotImplementedError, "only FSDP's were checked"),
    (["+sfpo.optimizer_state=reset"], NotImplementedError, "keys its state by the DTensor parameters"),
    (["+sfpo.alpha=2.5"], ValueError, "alpha must lie in [0, 2]"),
    (["+sfpo.outer_momentum=0.5"], NotImplementedError, "verl's checkpoint manager does not save worker state"),
    (["+sfpo.switch=fixed_step"], ValueError, "sfpo.switch='fixed_step' needs switch_stop_step"),
    (["+sfpo.inner_step=3"], ValueError, "unknown sfpo option(s) ['inner_step']"),
])
def test_refused_configs_say_why(overrides, error, words):
    from sfpo.integrations.verl import check_verl_config

    config = verl_config(*overrides)
    with pytest.raises(error) as excinfo:
        check_verl_config(config)
    assert words in str(excinfo.value)


def test_entropy_is_not_required_without_the_entropy_switch():
    from sfpo.integrations.verl import check_verl_config

    assert check_verl_config(verl_config("actor_rollout_ref.actor.entropy_coeff=0", "+sfpo.switch=never")).switch \
        == "never"


def example_overrides(script: str, tmp_path) -> list[str]:
    """The Hydra overrides an examples/verl script hands main_ppo (a stand-in python3 records them)."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "python3").write_text('#!/bin/sh\nshift 2\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGS_OUT"\n')
    (fake / "python3").chmod(0o755)
    out = tmp_path / f"{script}.args"
    subprocess.run(["bash", str(ROOT / "examples" / "verl" / script)], check=True,
                   env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "ARGS_OUT": str(out)})
    return out.read_text().splitlines()


def test_example_scripts_compose_and_differ_only_in_the_passes(tmp_path):
    from hydra import compose, initialize_config_dir

    from sfpo.integrations.verl import check_verl_config

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        configs = {s: compose("ppo_trainer", overrides=example_overrides(s, tmp_path))
                   for s in ("sfpo.sh", "grpo.sh", "grpo_4pass.sh")}
    sfpo = check_verl_config(configs["sfpo.sh"])
    assert (sfpo.inner_steps, sfpo.alpha, sfpo.switch, sfpo.switch_window, sfpo.switch_threshold) == \
        (3, 0.8, "entropy", 30, 1.0)
    actor = configs["sfpo.sh"].actor_rollout_ref.actor
    assert (actor.optim.lr, actor.entropy_coeff, actor.ppo_mini_batch_size) == (1e-6, 0.001, 64)
    assert configs["sfpo.sh"].data.train_batch_size == 256 and configs["sfpo.sh"].actor_rollout_ref.rollout.n == 8
    assert configs["grpo_4pass.sh"].actor_rollout_ref.actor.ppo_epochs == sfpo.inner_steps + 1
    for name in ("grpo.sh", "grpo_4pass.sh"):
        assert configs[name].trainer.v1.trainer_mode == "sync" and "sfpo" not in configs[name]
        same = {k: v for k, v in configs[name].actor_rollout_ref.actor.items() if k != "ppo_epochs"}
        assert same == {k: v for k, v in actor.items() if k != "ppo_epochs"}


def test_worker_refuses_an_optimizer_that_steps_copies_of_the_weights():
    """A reposition of the model's weights cannot reach masters kept elsewhere (as megatron-core keeps them)."""
    import torch

    from sfpo.integrations.verl import SFPOTrainingWorker

    model = torch.nn.Linear(3, 2)
    masters = [p.detach().clone().requires_grad_() for p in model.parameters()]
    worker = object.__new__(SFPOTrainingWorker)  # the check runs before anything distributed
    worker.engine = SimpleNamespace(module=model, optimizer=torch.optim.SGD(masters, lr=0.1),
                                    is_param_offload_enabled=False)
    plan = {"inner_steps": 2, "alpha": 0.8, "optimizer_state": "carry", "active": True}
    with pytest.raises(NotImplementedError, match="not the model's parameters"):
        worker._slow_fast(plan)
    worker.engine.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert worker._slow_fast(plan).params[0] is next(model.parameters())


# ------------------------------------------------------------------------------------------- worker contract
@pytest.mark.parametrize("ranks", [1, 2])
def test_worker_contract(ranks, model_dir, tmp_path):
    """α=1 ≡ verl with ppo_epochs=K+1 and switched off ≡ ppo_epochs=1, bit for bit; α=0.8 repositions exactly on
    the gathered parameters; replicas identical; one LR step per training step; the drift reduced over shards."""
    import socket

    with socket.socket() as sock:  # torchrun's env rendezvous needs a real port (0 is not "pick one" there)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}",
           str(HERE / "verl_contract_worker.py"), model_dir, str(result)]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=HERE, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads(result.read_text())
    diffs = r.pop("max_diff")
    assert diffs["sfpo_alpha_1 vs plain_k_plus_1"] == 0.0 and diffs["sfpo_off vs plain_1"] == 0.0
    assert diffs["sfpo vs plain_k_plus_1"] > 1e-3
    steps, passes, per_pass = 2, 3, 2  # K=2: 3 passes of 2 mini-batches (optimizer steps) per training step
    assert r["sfpo_alpha_1"]["hash"] == r["plain_k_plus_1"]["hash"]
    assert r["sfpo_off"]["hash"] == r["plain_1"]["hash"]
    assert len({r[k]["hash"] for k in ("plain_k_plus_1", "plain_1", "sfpo")}) == 3  # the scenarios differ
    for name, run in r.items():
        assert run["replicas_identical"], name
        assert run["lr_steps"] == steps, name  # verl steps the LR once per train_mini_batch, SFPO or not
    assert r["sfpo"]["optimizer_steps"] == [steps * passes * per_pass]
    assert r["sfpo_off"]["optimizer_steps"] == [steps * per_pass]
    sfpo = r["sfpo"]
    # θ̃ vs θ0 + α(θK − θ0) in float32: a few ulps of |θ| ≲ 1; a skipped reposition would be off by (1-α)·moved
    assert len(sfpo["reposition_error"]) == steps and max(sfpo["reposition_error"]) < 1e-6
    assert min(sfpo["moved"]) > 1e-2
    assert max(sfpo["drift_error"]) < 1e-6  # sfpo/drift_norm is the norm over all shards, not this rank's
    assert sfpo["anchor_numel"] * ranks == sfpo["full_numel"]  # each rank's θ0 holds its shard only
    for m in sfpo["metrics"]:
        assert m["sfpo/passes"] == [3.0] and m["sfpo/alpha"] == [0.8] and m["sfpo/active"] == [1.0]
        assert {"sfpo/loss_first_fast", "sfpo/loss_last_fast", "sfpo/loss_slow", "sfpo/entropy_slow"} <= set(m)
    for m in r["sfpo_off"]["metrics"]:
        assert m["sfpo/passes"] == [1.0] and m["sfpo/active"] == [0.0] and "sfpo/drift_norm" not in m


# ---------------------------------------------------------------------------------------------- driver side
def stub_trainer(tmp_path, *overrides):
    """An SFPOVerlTrainer whose verl methods are real but whose worker group and data loader are stubs."""
    from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

    from sfpo.core import make_switch
    from sfpo.integrations.verl import SFPOVerlTrainer, check_verl_config

    config = verl_config(f"trainer.default_local_dir={tmp_path}", "+sfpo.switch_window=4", *overrides)
    trainer = object.__new__(SFPOVerlTrainer)  # __init__ builds data loaders and Ray pools
    trainer.config, trainer.sfpo = config, check_verl_config(config)
    s = trainer.sfpo
    trainer.switch = make_switch(s.switch, window=s.switch_window, threshold=s.switch_threshold)
    trainer.sfpo_steps, trainer.global_steps, trainer.use_critic, trainer.trainer_mode = 0, 0, False, "sync"
    trainer.checkpoint_callback = build_checkpoint_callback(config)
    trainer.train_dataloader = SimpleNamespace(state_dict=lambda: {}, load_state_dict=lambda sd: None)
    trainer.plans = []

    def update_actor(batch):
        plan = batch.extra_info["sfpo_plan"]
        trainer.plans.append(plan)
        passes = plan["inner_steps"] + 1 if plan["active"] else 1
        return {"metrics": {"mfu": [0.0], "sfpo/passes": [float(passes)],
                            "sfpo/entropy_slow": [trainer.entropies[len(trainer.plans) - 1]]}}

    trainer.actor_rollout_wg = SimpleNamespace(update_actor=update_actor, save_checkpoint=lambda *a, **k: None,
                                               load_checkpoint=lambda *a, **k: None)
    return trainer


def test_driver_switch_turns_sfpo_off_and_survives_a_checkpoint(tmp_path):
    from sfpo.core.switch import entropy_zscore

    trainer = stub_trainer(tmp_path)
    # window 4, τ=1: falling entropy keeps z < 1; the rise at step 5 gives z ≥ 1 -> steps 6.. are plain
    trainer.entropies = [2.0, 1.9, 1.8, 1.7, 1.6, 2.4, 1.5, 1.4]
    assert entropy_zscore(trainer.entropies[2:6]) >= 1.0 > entropy_zscore(trainer.entropies[1:5])
    metrics_seen = []
    for step in range(4):
        metrics = {}
        trainer._update_actor(SimpleNamespace(extra_info={}), metrics)
        metrics_seen.append(metrics)
    assert [p["active"] for p in trainer.plans] == [True] * 4
    assert metrics_seen[-1]["sfpo/passes"] == 4.0 and "actor/sfpo/passes" not in metrics_seen[-1]
    trainer.global_steps = 4
    trainer._save_checkpoint()
    saved = json.loads((tmp_path / "global_step_4" / "sfpo_state.json").read_text())
    assert saved["sfpo_steps"] == 4 and len(saved["switch"]["history"]) == 4

    resumed = stub_trainer(tmp_path, "trainer.resume_mode=auto")
    resumed.entropies = trainer.entropies[4:]
    resumed._load_checkpoint()
    assert resumed.global_steps == 4 and resumed.sfpo_steps == 4
    for _ in range(4):
        metrics = {}
        resumed._update_actor(SimpleNamespace(extra_info={}), metrics)
    # the switch decided on the resumed window: on for steps 4 and 5, off from step 6 on, for good
    assert [p["active"] for p in resumed.plans] == [True, True, False, False]
    assert metrics["sfpo/switch_on"] == 0.0 and resumed.switch.switched_at == 5

    fresh = stub_trainer(tmp_path / "elsewhere")
    fresh.entropies = trainer.entropies[4:]
    for _ in range(4):
        fresh._update_actor(SimpleNamespace(extra_info={}), {})
    assert all(p["active"] for p in fresh.plans)  # without the saved window the rise goes unseen: state matters


def test_trainer_puts_the_sfpo_worker_into_verl_worker_mapping(tmp_path):
    from verl.trainer.ppo.utils import Role
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from sfpo.integrations.verl import SFPOActorRolloutRefWorker, SFPOTrainingWorker

    trainer = stub_trainer(tmp_path)
    trainer._init_resource_pool_mgr()  # verl's own, then ours: only the actor role changes class
    actor_cls = trainer.role_worker_mapping[Role.ActorRollout].__ray_actor_class__
    assert issubclass(actor_cls, SFPOActorRolloutRefWorker) and issubclass(actor_cls, ActorRolloutRefWorker)
    assert SFPOActorRolloutRefWorker.actor_worker_cls is SFPOTrainingWorker
    assert SFPOActorRolloutRefWorker.ref_worker_cls is ActorRolloutRefWorker.ref_worker_cls


# ------------------------------------------------------------------------------------------------------ Ray
def test_ray_worker_group_runs_sfpo_and_switched_off_steps(model_dir, tmp_path):
    import shutil
    import tempfile

    code = f"import ray_check; ray_check.main({model_dir!r}, {str(tmp_path / 'ray.json')!r})"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=600,
                             env={**ENV, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"})  # no ~/.ray token
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "ray.json").read_text())
    assert r["passes"] == [3.0, 3.0, 1.0]
    # 8 rows dispatched over 2 ranks, mini-batch 8 (4 per rank): one optimizer step per pass
    assert r["optimizer_steps"] == [3, 3, 1] and r["lr_steps"] == 3 and r["ranks"] == 2
    assert r["anchor_numel"] * 2 == r["full_numel"]  # each rank keeps θ0 of its shard
