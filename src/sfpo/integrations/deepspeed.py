"""DeepSpeed ZeRO (stages 1–3) for SFPO: what a reposition must act on, and how the module sees the result.

ZeRO's optimizer updates each rank's fp32 master partitions and then overwrites the module's (bf16 or fp32)
weights from them, so SFPO snapshots and repositions those partitions (the anchor is 1/N per rank, on the CPU
with optimizer offload) and then refreshes the module weights exactly as DeepSpeed does after its own step.
Used by ``sfpo.integrations.trl``; tested with DeepSpeed 0.19 (see docs/trl.md). Imports deepspeed lazily.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["ZeroPartitions", "check_config"]


def check_config(ds_config: dict[str, Any], optimizer_state: str) -> None:
    """Refuse, before training starts, the ZeRO settings whose master weights a reposition cannot reach."""
    zero = ds_config.get("zero_optimization") or {}
    stage = int(zero.get("stage", 0))
    if stage not in (1, 2, 3):
        raise NotImplementedError(
            f"SFPOTrainer supports DeepSpeed ZeRO stages 1-3, not stage {stage}: without ZeRO, DeepSpeed's fp16/bf16 "
            "optimizer keeps its own flat fp32 masters, which is untested here; use ZeRO stage 1 (same compute, "
            "sharded optimizer state) or accelerate's DDP")
    for key in ("offload_optimizer", "offload_param"):
        if (zero.get(key) or {}).get("device") == "nvme":
            raise NotImplementedError(
                f"SFPOTrainer with DeepSpeed {key}.device='nvme': the fp32 master partitions (or the weights) are "
                "swapped out to NVMe between steps, out of reach of a reposition; use device 'cpu' or none")
    if zero.get("zenflow") or (zero.get("offload_optimizer") or {}).get("super_offload"):
        raise NotImplementedError("SFPOTrainer with ZenFlow / SuperOffload: these update the masters "
                                  "asynchronously on the CPU, so there is no point between steps to reposition at")
    if zero.get("zero_quantized_weights"):
        raise NotImplementedError("SFPOTrainer with ZeRO++ quantized weights (zero_quantized_weights) is untested: "
                                  "the refresh of the module weights from the masters would skip the quantization")
    if optimizer_state != "carry":
        raise NotImplementedError(
            f"optimizer_state={optimizer_state!r} with DeepSpeed ZeRO: the Adam moments are partitioned inside "
            "ZeRO's optimizer and linked to its parameter mappings; only 'carry' (the official code's) is supported")


class ZeroPartitions:
    """This rank's fp32 master partitions of a ZeRO optimizer (``masters``) and ``refresh()``, which copies them
    into the module's low-precision partitions and gathers those, as DeepSpeed's own step does.

    Args:
        optimizer: the trainer's optimizer: DeepSpeed's ZeRO optimizer, or accelerate's wrapper around it.
    """

    def __init__(self, optimizer: Any) -> None:
        from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
        from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

        zero = getattr(optimizer, "optimizer", optimizer)  # accelerate's DeepSpeedOptimizerWrapper
        kind = type(zero)  # exact: subclasses (ZenFlow, SuperOffload) step differently
        self.refresh: Callable[[], None]
        if kind is DeepSpeedZeroOptimizer:  # stages 1 and 2
            self.stage = 2 if zero.partition_gradients else 1
            self.masters = list(zero.single_partition_of_fp32_groups)
            self.refresh = zero.update_lp_params
        elif kind is BF16_Optimizer:  # stage 1 with bf16 weights and fp32 gradient accumulation
            self.stage = 1
            self.masters = list(zero.fp32_groups_flat_partition)
            self.refresh = zero.update_lp_params
        elif kind is DeepSpeedZeroOptimizer_Stage3:
            if zero.swap_optimizer or zero.params_in_nvme_and_cpu:
                raise NotImplementedError("ZeRO-3 swaps its fp32 masters or weights to NVMe: out of reach")
            self.stage = 3
            self.masters = list(zero.fp32_partitioned_groups_flat)
            self.refresh = self._stage3_refresher(zero)
        else:
            raise NotImplementedError(
                f"SFPOTrainer does not know where DeepSpeed's {kind.__name__} keeps its master weights; supported: "
                "DeepSpeedZeroOptimizer (ZeRO 1/2), BF16_Optimizer (ZeRO 1), DeepSpeedZeroOptimizer_Stage3")
        self.optimizer = zero.optimizer  # the torch optimizer, whose state is keyed by the masters

    @staticmethod
    def _stage3_refresher(zero: Any) -> Callable[[], None]:
        @torch.no_grad()
        def refresh() -> None:
            # What DeepSpeedZeroOptimizer_Stage3.step does after updating each sub-group's masters: copy them into
            # the module's partitions, then re-gather the persistent (never partitioned) parameters and drop the
            # hpZ secondary copies, so the next forward gathers the new values.
            for sub_group in range(len(zero.fp16_groups)):
                zero._reassign_or_swap_out_partitioned_parameters(sub_group)
            if zero.persistent_parameters:
                zero.persistent_parameters[0].all_gather(zero.persistent_parameters)
            zero.invalidate_secondary_tensor()

        return refresh

    def numel(self) -> int:
        return sum(t.numel() for t in self.masters)
