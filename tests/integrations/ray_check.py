"""Run from test_verl.py in a fresh process: a Ray worker group (local, CPU, 2 ranks) of the SFPO training worker
runs two SFPO steps and a switched-off step through verl's dispatch; writes passes, LR steps and the anchor size."""

import json
import os

from verl_cpu import CPU_ENV

os.environ.update(CPU_ENV)

import ray  # noqa: E402
from verl.single_controller.base.decorator import Dispatch, register  # noqa: E402

from sfpo.integrations.verl import PLAN_KEY, SFPOTrainingWorker  # noqa: E402


class ProbedWorker(SFPOTrainingWorker):
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def probe(self):
        anchor = (self._sfpo.anchor.tensors if self._sfpo is not None else None) or []
        return {"anchor_numel": sum(a.numel() for a in anchor), "lr_epoch": self.engine.lr_scheduler.last_epoch,
                "full_numel": sum(p.numel() for p in self.engine.module.parameters())}  # DTensor numel: global


def main(model_dir: str, result_path: str) -> None:
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.utils import tensordict_utils as tu

    from verl_cpu import ppo_batch, ppo_loss_fn, training_config

    # logical CPUs: a worker group asks for more than 2 and would wait forever on a 2-core machine
    ray.init(num_cpus=100, include_dashboard=False,
             runtime_env={"env_vars": {**CPU_ENV, "PYTHONPATH": os.environ["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
    try:
        workers = RayWorkerGroup(RayResourcePool([2], use_gpu=False),
                                 RayClassWithInitArgs(cls=ray.remote(ProbedWorker), config=training_config(model_dir)))
        workers.reset()
        workers.set_loss_fn(ppo_loss_fn())
        lr0 = workers.probe()[0]["lr_epoch"]
        passes, lr_steps = [], []
        plan = {"inner_steps": 2, "alpha": 0.8, "optimizer_state": "carry", "active": True}
        for step, active in enumerate([True, True, False]):
            data = ppo_batch(14, seed=step)
            tu.assign_non_tensor(data, mini_batch_size=8, epochs=1, seed=0, dataloader_kwargs={"shuffle": True},
                                 global_batch_size=8, calculate_entropy=True, temperature=1.0,
                                 **{PLAN_KEY: {**plan, "active": active}})
            metrics = tu.get(workers.train_mini_batch(data).get(), "metrics")
            passes.append(metrics["sfpo/passes"][0])
            lr_steps.append(len(metrics["grad_norm"]))  # one grad norm per optimizer step
        probes = workers.probe()
        result = {"passes": passes, "optimizer_steps": lr_steps, "lr_steps": probes[0]["lr_epoch"] - lr0,
                  "anchor_numel": probes[0]["anchor_numel"], "full_numel": probes[0]["full_numel"],
                  "ranks": len(probes)}
    finally:
        ray.shutdown()
    with open(result_path, "w") as f:
        json.dump(result, f)
