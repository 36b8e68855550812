"""Test-only: run verl 0.9's FSDP engine on CPU, and build the tiny Qwen2 and PPO batches the verl tests train on.

verl registers its FSDP engines for cuda/npu only and falls back to the "nvidia" platform without a GPU. Imported
through ``VERL_USE_EXTERNAL_MODULES`` (``import verl`` imports it in every process, Ray workers included), this
registers a CPU platform (device "cpu", gloo); ``VERL_PLATFORM`` selects it and ``VERL_ENGINE_DEVICE=cuda`` picks the
FSDP engine class; Ray workers get a plain gloo process group. ``CPU_ENV`` holds those variables. Nothing here is part of the library.
"""

import torch

CPU_ENV = {"VERL_USE_EXTERNAL_MODULES": "verl_cpu", "VERL_PLATFORM": "sfpo_test_cpu", "VERL_ENGINE_DEVICE": "cuda",
           "VERL_USE_EXTERNAL_PLUGINS": "auto", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


class _CPUDevice:
    """What verl calls on ``get_torch_device()``, answered for a CPU: no device memory to report, nothing to sync."""

    def __getattr__(self, name):
        if name.endswith(("memory_allocated", "memory_reserved")):
            return lambda *a, **k: 0
        return getattr(torch.cuda, name)

    @staticmethod
    def mem_get_info(*_):
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    def current_device(self):
        return 0

    def get_device_name(self, *_):
        return "CPU"  # verl's MFU table has no CPU entry: MFU reads 0

    def device_count(self):
        return 1

    def is_available(self):
        return True

    def synchronize(self, *_):
        pass

    def empty_cache(self):
        pass

    def set_device(self, *_):
        pass

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


def _register_platform() -> None:
    from verl.plugin.platform.platform_cuda import PlatformCUDA
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform="sfpo_test_cpu")
    class CPUTestPlatform(PlatformCUDA):
        """CUDA's platform with the device and collectives of a CPU (torch.cuda's memory queries return 0 there)."""

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def device_module(self):
            return _CPUDevice()

        def is_available(self) -> bool:
            return True

        def current_device(self) -> str:
            return "cpu"  # verl passes it to .to() and torch.device(); an index would name an accelerator

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            pass

        def synchronize(self, device_index=None) -> None:
            pass

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            pass

        def empty_cache(self) -> None:
            pass

        def communication_backend_name(self) -> str:
            return "gloo"


_register_platform()  # registering a name selects nothing: VERL_PLATFORM does


def _gloo_only() -> None:
    """verl's Ray workers init torch.distributed with "cpu:gloo,<device>:<backend>", which reads "cpu:gloo,cpu:gloo"
    here and is refused: default the backend to plain gloo (the function object itself, so every import sees it)."""
    from verl.utils import distributed

    distributed.initialize_global_process_group_ray.__defaults__ = (None, "gloo")


_gloo_only()


def save_tiny_qwen2(path: str, seed: int = 0) -> str:
    """A 2-layer Qwen2 with the character tokenizer of tests/tiny.py, saved where verl's HFModelConfig loads it."""
    from tiny import make_model, make_tokenizer

    tok = make_tokenizer()
    make_model(tok, seed=seed, hidden=32, layers=2).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def training_config(model_path: str, *, lr: float = 1e-2, micro_batch: int = 2, strategy: str = "fsdp2",
                    param_offload: bool = False):
    """The TrainingWorkerConfig ActorRolloutRefWorker builds for its actor, for the tiny model on CPU: fp32, sdpa
    attention (the flash-attention default needs a GPU), no torch.compile, AdamW at a constant LR."""
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine_workers import TrainingWorkerConfig

    model = HFModelConfig(path=model_path, override_config={"attn_implementation": "sdpa"})
    engine = FSDPEngineConfig(strategy=strategy, forward_only=False, model_dtype="fp32", use_torch_compile=False,
                              param_offload=param_offload, micro_batch_size_per_gpu=micro_batch,
                              infer_micro_batch_size_per_gpu=micro_batch, seed=0, use_dynamic_bsz=False,
                              max_token_len_per_gpu=4096, infer_max_token_len_per_gpu=4096,
                              mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"})
    optim = FSDPOptimizerConfig(lr=lr, lr_warmup_steps_ratio=0.0, total_training_steps=100, weight_decay=0.0)
    return TrainingWorkerConfig(model_type="language_model", model_config=model, engine_config=engine,
                                optimizer_config=optim, checkpoint_config=None)


def ppo_loss_fn(entropy_coeff: float = 0.001):
    """verl's own PPO loss with the paper's entropy coefficient (so each pass reports actor/entropy_loss)."""
    from functools import partial

    from verl.workers.config import ActorConfig
    from verl.workers.utils.losses import ppo_loss

    config = ActorConfig(strategy="fsdp2", rollout_n=1, ppo_micro_batch_size_per_gpu=2, entropy_coeff=entropy_coeff,
                         calculate_entropy=True, use_torch_compile=False)
    return partial(ppo_loss, config=config)


def ppo_batch(vocab: int, *, batch: int = 8, prompt: int = 4, response: int = 6, seed: int = 0):
    """A rollout batch as verl's trainer hands it to update_actor, in the no-padding layout: tokens, masks, old
    log-probs and advantages; the non-tensor keys the trainer's _update_actor sets are left to the caller."""
    from verl import DataProto
    from verl.utils.model import compute_position_id_with_mask
    from verl.workers.utils.padding import left_right_2_no_padding

    g = torch.Generator().manual_seed(seed)
    seqlen = prompt + response
    input_ids = torch.randint(2, vocab, (batch, seqlen), generator=g)
    attention_mask = torch.ones(batch, seqlen, dtype=torch.long)
    attention_mask[: batch // 2, -2:] = 0  # half the responses end early (right padding)
    data = DataProto.from_single_dict({
        "input_ids": input_ids, "prompts": input_ids[:, :prompt], "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask), "responses": input_ids[:, prompt:],
        "response_mask": attention_mask[:, prompt:],
        "old_log_probs": -2.0 + 0.1 * torch.randn(batch, response, generator=g),
        "advantages": torch.randn(batch, response, generator=g),
    }, meta_info={"temperature": 1.0})
    return left_right_2_no_padding(data.to_tensordict())
