"""Run by ``torch.distributed.run`` from test_verl.py: verl's real TrainingWorker loop (FSDP2, gloo, tiny Qwen2)
under the SFPO worker, against plain verl workers built from the same weights. Each scenario trains two rollout
batches; rank 0 writes what the test asserts on (hashes of the gathered parameters, the reposition error, LR and
optimizer step counts) as JSON. ``argv``: model dir, output path[, strategy (fsdp2), "offload"]. On CPU by default;
``SFPO_VERL_DEVICE=cuda`` runs it on GPUs (examples/verl/gpu_check.sh: FSDP1, parameter offload), where kernels
need not be bit-reproducible, so it also reports max |Δθ| between the runs that must agree and a plain rerun."""

import hashlib
import json
import os
import sys

from verl_cpu import CPU_ENV

DEVICE = os.environ.get("SFPO_VERL_DEVICE", "cpu")
if DEVICE == "cpu":
    os.environ.update(CPU_ENV)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from verl_cpu import ppo_batch, ppo_loss_fn, training_config  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.engine_workers import TrainingWorker  # noqa: E402

from sfpo.integrations.verl.worker import PLAN_KEY, SFPOTrainingWorker  # noqa: E402

K, ALPHA = 2, 0.8
MINI_BATCH = 4  # of a batch of 8 (per rank with 1 rank): 2 mini-batches = 2 optimizer steps per pass


def full_params(worker):
    module = worker.engine.module
    if any(hasattr(p, "full_tensor") for p in module.parameters()):  # FSDP2: DTensors
        return [p.full_tensor().detach().float().cpu().clone() for p in module.parameters()]  # 1 rank: a view
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(module):  # FSDP1: flat shards -> the original parameters
        return [p.detach().float().cpu().clone() for p in module.parameters()]


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


class RecordingWorker(SFPOTrainingWorker):
    """Records the gathered parameters at θ0, just before (θK) and just after (θ̃) the reposition."""

    record: dict = {}

    def _slow_fast(self, plan):
        update = super()._slow_fast(plan)
        if not getattr(update, "_recorded", False):
            begin, reposition = update.begin, update.reposition

            def recording_begin(active=True):
                self.record["theta0"] = full_params(self)
                begin(active)

            def recording_reposition():
                self.record["theta_k"] = full_params(self)
                reposition()
                self.record["theta_tilde"] = full_params(self)

            update.begin, update.reposition, update._recorded = recording_begin, recording_reposition, True
        return update


def run(cls, model_dir, *, epochs=1, plan=None, steps=2, strategy="fsdp2", offload=False):
    worker = cls(training_config(model_dir, strategy=strategy, param_offload=offload))
    worker.reset()
    worker.set_loss_fn(ppo_loss_fn())
    lr0 = worker.engine.lr_scheduler.last_epoch
    out = {"reposition_error": [], "moved": [], "drift_error": [], "metrics": []}
    for step in range(steps):
        data = ppo_batch(14, seed=step)
        tu.assign_non_tensor(data, mini_batch_size=MINI_BATCH * dist.get_world_size(), epochs=epochs, seed=0,
                             dataloader_kwargs={"shuffle": True}, global_batch_size=MINI_BATCH * dist.get_world_size(),
                             calculate_entropy=True, temperature=1.0)
        if plan is not None:
            tu.assign_non_tensor(data, **{PLAN_KEY: plan})
        worker.record = {}
        result = worker.train_mini_batch(data)
        metrics = tu.get(result, "metrics") if result is not None else {}
        out["metrics"].append({k: v for k, v in metrics.items() if k.startswith("sfpo/")})
        rec = worker.record
        if "theta_k" in rec:
            out["reposition_error"].append(max(
                (t - (a + ALPHA * (b - a))).abs().max().item()
                for t, a, b in zip(rec["theta_tilde"], rec["theta0"], rec["theta_k"])))
            out["moved"].append(max((b - a).abs().max().item() for a, b in zip(rec["theta0"], rec["theta_k"])))
            drift = torch.sqrt(sum((b - a).double().pow(2).sum() for a, b in zip(rec["theta0"], rec["theta_k"])))
            out["drift_error"].append(abs(metrics["sfpo/drift_norm"][0] - drift.item()) / drift.item())
    params = full_params(worker)
    hashes = [None] * dist.get_world_size()
    dist.all_gather_object(hashes, digest(params))
    opt_steps = {int(s["step"]) for s in worker.engine.optimizer.state.values()}
    out.update(hash=hashes[0], replicas_identical=len(set(hashes)) == 1, params=params,
               lr_steps=worker.engine.lr_scheduler.last_epoch - lr0, optimizer_steps=sorted(opt_steps))
    anchor = worker._sfpo.anchor.tensors if isinstance(worker, SFPOTrainingWorker) and worker._sfpo else None
    if anchor is not None:
        out["anchor_numel"] = sum(a.numel() for a in anchor)
        out["full_numel"] = sum(p.numel() for p in params)
    return out


def main(model_dir: str, result_path: str, strategy: str = "fsdp2", offload: str = "") -> None:
    if DEVICE == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("gloo" if DEVICE == "cpu" else "nccl")
    kw = {"strategy": strategy, "offload": offload == "offload"}
    on = {"inner_steps": K, "alpha": 1.0, "optimizer_state": "carry", "active": True}
    results = {
        "plain_k_plus_1": run(TrainingWorker, model_dir, epochs=K + 1, **kw),
        "sfpo_alpha_1": run(SFPOTrainingWorker, model_dir, plan=on, **kw),
        "plain_1": run(TrainingWorker, model_dir, epochs=1, **kw),
        "sfpo_off": run(SFPOTrainingWorker, model_dir, plan={**on, "alpha": ALPHA, "active": False}, **kw),
        "sfpo": run(RecordingWorker, model_dir, plan={**on, "alpha": ALPHA}, **kw),
    }
    if DEVICE == "cuda":
        results["plain_k_plus_1_again"] = run(TrainingWorker, model_dir, epochs=K + 1, **kw)
    params = {name: r.pop("params") for name, r in results.items()}
    results["max_diff"] = {
        "sfpo_alpha_1 vs plain_k_plus_1": max_diff(params["sfpo_alpha_1"], params["plain_k_plus_1"]),
        "sfpo_off vs plain_1": max_diff(params["sfpo_off"], params["plain_1"]),
        "sfpo vs plain_k_plus_1": max_diff(params["sfpo"], params["plain_k_plus_1"]),
    }
    if "plain_k_plus_1_again" in params:  # the noise floor of this device's kernels
        results["max_diff"]["plain_k_plus_1 rerun"] = max_diff(params["plain_k_plus_1_again"], params["plain_k_plus_1"])
    if dist.get_rank() == 0:
        with open(result_path, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: gloo/Ray atexit hooks add nothing and have aborted runs before


if __name__ == "__main__":
    main(*sys.argv[1:])
