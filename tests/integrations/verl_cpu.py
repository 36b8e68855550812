"""Test-only: run verl 0.9's FSDP engine on CPU, and build the tiny Qwen2 and PPO batches the verl tests train on.

verl registers its FSDP engines for cuda/npu only and falls back to the "nvidia" platform without a GPU. Put
``CPU_ENV`` into the environment before verl is imported (verl then imports verl_cpu_platform.py, which registers a
CPU platform); ``VERL_PLATFORM`` selects it and ``VERL_ENGINE_DEVICE=cuda`` picks the FSDP engine class. This module
imports verl only inside its functions, so reading ``CPU_ENV`` imports nothing. Nothing here is library code.
"""

import torch

CPU_ENV = {"VERL_USE_EXTERNAL_MODULES": "verl_cpu_platform", "VERL_PLATFORM": "sfpo_test_cpu",
           "VERL_ENGINE_DEVICE": "cuda", "VERL_USE_EXTERNAL_PLUGINS": "auto", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}


def save_tiny_qwen2(path: str, seed: int = 0, hidden: int = 32, layers: int = 2) -> str:
    """A small Qwen2 with the character tokenizer of tests/tiny.py, saved where verl's HFModelConfig loads it."""
    from tiny import make_model, make_tokenizer

    tok = make_tokenizer()
    make_model(tok, seed=seed, hidden=hidden, layers=layers).save_pretrained(path)
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
