"""Run by ``torch.distributed.run --nproc_per_node 2`` from test_trl_distributed.py: FSDP2 (``fully_shard``) on CPU
over gloo, with the tensors SFPOTrainer hands to the core (``local_shards`` of the optimizer's DTensor parameters).
The Trainer itself cannot run FSDP on CPU; this checks that snapshot and reposition on shards act on the full
parameters exactly: θ̃ = θ0 + α(θK − θ0). Rank 0 writes the verdict as JSON."""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from sfpo.core import SlowFastUpdate
from sfpo.integrations.trl import local_shards
from tiny_trl import end_distributed_run


def main(result_path: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    update = SlowFastUpdate(local_shards(params), inner_steps=2, alpha=0.5, optimizer=optimizer)
    torch.manual_seed(1 + dist.get_rank())
    x = torch.randn(4, 8)  # each rank its own data

    def one_pass():
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    def full():
        return [p.full_tensor().clone() for p in model.parameters()]

    errors, moved = [], []
    for _ in range(2):
        update.begin()
        theta0 = full()
        update.record_pass(one_pass())
        loss = one_pass()
        theta_k = full()
        update.record_pass(loss)  # the K-th fast pass: repositions
        theta_tilde = full()
        errors.append(max((t - (a + 0.5 * (b - a))).abs().max().item()
                          for t, a, b in zip(theta_tilde, theta0, theta_k)))
        moved.append(max((b - a).abs().max().item() for a, b in zip(theta0, theta_k)))
        update.record_pass(one_pass())
        update.end()
    if dist.get_rank() == 0:
        with open(result_path, "w") as f:
            json.dump({"sharded": all(type(p).__name__ == "DTensor" for p in params),
                       "local_numel": sum(t.numel() for t in update.params),
                       "full_numel": sum(p.numel() for p in params), "lerp_errors": errors, "moved": moved}, f)
    end_distributed_run()


if __name__ == "__main__":
    main(sys.argv[1])
