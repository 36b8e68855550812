"""The actor side: verl's ``TrainingWorker`` with one actor update run as one SFPO step.

verl's ``train_mini_batch`` iterates mini-batches × epochs and steps the LR once, on the last mini-batch. With an
SFPO plan in the batch (put there by the SFPO trainer) this worker asks it for K+1 epochs (1 after the switch),
snapshots θ0 on the first mini-batch, repositions on the optimizer's parameters (under FSDP2 their local shards)
after the last optimizer step of pass K, and adds ``sfpo/*`` metrics. Without a plan it is verl's worker.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from verl.single_controller.base.decorator import make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.utils.metric.utils import Metric
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from sfpo.core import SlowFastUpdate
from sfpo.integrations.sharding import DTensor, local_shards, reduce_norm, shard_groups

__all__ = ["PLAN_KEY", "SFPOTrainingWorker", "SFPOActorRolloutRefWorker"]

logger = logging.getLogger(__name__)

PLAN_KEY = "sfpo_plan"  # non-tensor key of the batch: {inner_steps, alpha, optimizer_state, active}
ENTROPY_METRIC = "actor/entropy_loss"  # verl's ppo_loss reports the token entropy under this name


def _scalar(value) -> float:
    """One number from a metric as verl's train_batch returns it (a Metric, a list of per-rank Metrics, floats)."""
    if isinstance(value, Metric):
        return float(value.aggregate())
    if isinstance(value, list):
        if value and isinstance(value[0], Metric):
            return float(Metric.aggregate_dp(value))
        return sum(_scalar(v) for v in value) / len(value)
    return float(value)


@dataclass
class _Step:
    """The SFPO step in progress inside one train_mini_batch call."""

    update: SlowFastUpdate | None
    plan: dict
    per_pass: int  # mini-batches (= optimizer steps) per pass
    calls: int = 0
    losses: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)


class SFPOTrainingWorker(TrainingWorker):
    """``TrainingWorker`` whose ``train_mini_batch`` runs an SFPO step when the batch carries a plan."""

    _sfpo: SlowFastUpdate | None = None
    _sfpo_key: tuple | None = None
    _sfpo_step: _Step | None = None

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="train"), blocking=False)
    def train_mini_batch(self, data):
        plan = tu.pop(data, key=PLAN_KEY, default=None)
        if plan is None:
            return super().train_mini_batch(data)
        epochs = tu.get(data, key="epochs", default=1)
        if epochs != 1:
            raise ValueError(f"SFPO sets the passes over the batch itself; got epochs={epochs} (ppo_epochs must be 1)")
        sfpo_on = plan["active"] and plan["inner_steps"] > 0 and plan["alpha"] > 0.0
        mini_batch_size = tu.get(data, key="mini_batch_size", default=None)
        per_gpu = (data.shape[0] // tu.get(data, key="num_mini_batch") if mini_batch_size is None
                   else mini_batch_size // self.engine.get_data_parallel_size())
        tu.pop(data, key="epochs", default=None)
        tu.assign_non_tensor(data, epochs=plan["inner_steps"] + 1 if sfpo_on else 1)
        self._sfpo_step = _Step(update=None, plan=plan, per_pass=data.shape[0] // per_gpu)
        try:
            output = super().train_mini_batch(data)  # calls our train_batch once per mini-batch
            metrics = self._end_step()
        finally:
            self._sfpo_step = None
        if output is None:
            return None
        merged = dict(tu.get(output, "metrics"))
        merged.update({key: [value] for key, value in metrics.items()})
        return tu.get_tensordict(tensor_dict={}, non_tensor_dict={"metrics": merged}).cpu()

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="train"), blocking=False)
    def train_batch(self, data):
        step = self._sfpo_step
        if step is None:
            return super().train_batch(data)
        if step.calls == 0:
            # inside train_mini_batch's engine.train_mode(): parameters are on the device (offload) and their
            # storage is the one the optimizer steps now, so collect them and take θ0 here, every step
            step.update = self._slow_fast(step.plan)
            step.update.begin(active=step.plan["active"])
        output = super().train_batch(data)
        step.calls += 1
        if output is not None:
            metrics = tu.get(output, "metrics")
            step.losses.append(_scalar(metrics["loss"]))
            if step.update.phase == "slow" and ENTROPY_METRIC in metrics:
                step.entropies.append(_scalar(metrics[ENTROPY_METRIC]))
        if step.calls % step.per_pass == 0:
            pass_loss = sum(step.losses) / len(step.losses) if step.losses else math.nan
            step.losses.clear()
            step.update.record_pass(pass_loss)  # after the last optimizer step of pass K: repositions in place
        return output

    def _slow_fast(self, plan: dict) -> SlowFastUpdate:
        optimizer = self.engine.optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        module_params = {id(p) for p in self.engine.module.parameters()}
        if any(id(p) not in module_params for p in params):
            raise NotImplementedError(
                "the actor's optimizer steps tensors that are not the model's parameters (fp32 master copies kept "
                "elsewhere): a reposition of the model weights would not reach them, so SFPO refuses this setup")
        if plan["optimizer_state"] != "carry" and any(isinstance(p, DTensor) for p in params):
            raise NotImplementedError(
                f"optimizer_state={plan['optimizer_state']!r} with FSDP2: the optimizer keys its state by the "
                "DTensor parameters while the reposition acts on their local shards; use 'carry'")
        shards = local_shards(params)
        key = (plan["inner_steps"], plan["alpha"], plan["optimizer_state"], tuple(t.data_ptr() for t in shards))
        if self._sfpo is None or self._sfpo_key != key:  # new storage (offload moved it) or new settings
            self._sfpo = SlowFastUpdate(
                shards, inner_steps=plan["inner_steps"], alpha=plan["alpha"], optimizer=optimizer,
                optimizer_state=plan["optimizer_state"],
                anchor_device="cpu" if self.engine.is_param_offload_enabled else None)
            self._sfpo_key = key
            self._shard_groups = shard_groups(params)
        return self._sfpo

    def _end_step(self) -> dict[str, float]:
        step = self._sfpo_step
        if step.update is None or step.update.phase != "done":
            raise RuntimeError(
                f"SFPO step ended after {step.calls} mini-batches in phase "
                f"{getattr(step.update, 'phase', 'idle')!r}: verl's train_mini_batch no longer runs "
                f"{step.per_pass} mini-batches per epoch; this sfpo release supports verl>=0.9,<0.10")
        metrics = step.update.end()
        metrics.pop("time/reposition", None)
        if "sfpo/drift_norm" in metrics:  # the core measured this rank's shard: the drift is over all shards
            metrics["sfpo/drift_norm"] = reduce_norm(metrics["sfpo/drift_norm"], self._shard_groups)
            metrics["sfpo/reposition_norm"] = step.plan["alpha"] * metrics["sfpo/drift_norm"]
        if step.entropies:
            metrics["sfpo/entropy_slow"] = sum(step.entropies) / len(step.entropies)
        metrics["sfpo/passes"] = float(step.calls // step.per_pass)
        return metrics


class SFPOActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid actor/rollout/ref worker with the SFPO training worker as its actor."""

    actor_worker_cls = SFPOTrainingWorker
