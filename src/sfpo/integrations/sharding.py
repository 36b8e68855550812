"""Sharded parameters as the SFPO core sees them (torch only, shared by the TRL and verl adapters).

The core's snapshot and reposition are elementwise, so acting on each rank's shard is acting on the whole
parameter; only a norm (the drift) needs a reduction, over the ranks that hold the shards of one replica.
"""

from __future__ import annotations

import math

import torch

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch built without distributed support has no DTensor to shard by
    DTensor = ()

__all__ = ["local_shards", "shard_groups", "reduce_norm"]


def local_shards(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors a reposition must act on: the parameters themselves, or the local shards of FSDP2's DTensor
    parameters. DTensor has no sharding rule for the foreach copy the anchor uses; the local shard is the same
    storage, and snapshot and reposition are elementwise, so acting on shards is acting on the parameters."""
    return [p.to_local() if isinstance(p, DTensor) else p for p in params]


def shard_groups(params: list[torch.Tensor]) -> list:
    """The process groups a DTensor parameter is sharded over (FSDP2: the mesh's Shard dimensions; under HSDP the
    shard group, not the replicate group). Empty for plain tensors."""
    for p in params:
        if isinstance(p, DTensor):
            return [p.device_mesh.get_group(i) for i, placement in enumerate(p.placements) if placement.is_shard()]
    return []


def reduce_norm(local_norm: float, groups: list) -> float:
    """The 2-norm over all shards from this rank's shard norm: the squares summed over ``groups``."""
    if not groups:
        return local_norm
    sq = torch.tensor(local_norm**2, dtype=torch.float64)
    for group in groups:
        torch.distributed.all_reduce(sq, group=group)
    return math.sqrt(float(sq))
