"""DeepSpeed on a machine without a GPU, for the tests and benchmarks/bench_deepspeed.py: DeepSpeed's CPU
accelerator over gloo, one process or several. Call ``setup()`` before anything builds a TrainingArguments; on a
machine with CUDA it only sets the single-process launcher variables, so the same scripts run on a GPU."""

import os
import sys


def setup() -> bool:
    """Returns whether the CPU accelerator is in use."""
    if "RANK" not in os.environ:  # one process: the variables a launcher would set
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
    import torch

    if torch.cuda.is_available():
        return False
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.comm.torch  # noqa: F401
    import transformers.training_args
    from accelerate import PartialState

    # DeepSpeed JIT-compiles a shared-memory all-reduce kernel for its CPU accelerator at init (≈3 min on 2 cores,
    # needs a C++ toolchain); it only speeds up inference all-reduces, training collectives go through gloo.
    # (`deepspeed.comm.torch` is the torch module itself there: the submodule is reached through sys.modules.)
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    # TrainingArguments refuses bf16 without a bf16 GPU; DeepSpeed's CPU accelerator runs bf16 and the dtype comes
    # from DeepSpeed's config, so that check is the only thing in the way.
    transformers.training_args.is_torch_bf16_gpu_available = lambda: True
    # Without a GPU accelerate finds no backend for DeepSpeed and counts one process whatever the world size (TRL's
    # gathers then fail); HF passes no ddp_backend under DeepSpeed: default it to gloo.
    init = PartialState.__init__
    PartialState.__init__ = lambda self, cpu=False, **kw: init(self, cpu, **{**kw,
                                                                           "backend": kw.get("backend") or "gloo"})
    return True
