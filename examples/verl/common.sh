#!/usr/bin/env bash
# Shared by sfpo.sh, grpo.sh and grpo_4pass.sh: the paper's setting (Qwen2.5-Math-1.5B on DAPO-Math-17K, validated
# on MATH; 256 prompts × 8 samples, 4 mini-batches, lr 1e-6, entropy coefficient 0.001, no KL) as verl 0.9 arguments.
# Only the actor's passes differ between the three scripts. Sourced, not run.
#
# DATA_DIR holds parquet files in verl's RL format (verl's examples/data_preprocess/ writes them):
#   $DATA_DIR/dapo_math_17k.parquet (train), $DATA_DIR/math_test.parquet (validation)
# MODEL is a local path or hub id; NGPUS the GPUs on this node. Extra arguments are appended (Hydra overrides).
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
NGPUS=${NGPUS:-8}
# Qwen2.5-Math has a 4k context; the paper does not fix our split of it, so these are choices, not its numbers
MAX_PROMPT=${MAX_PROMPT:-1024}
MAX_RESPONSE=${MAX_RESPONSE:-3072}

COMMON_ARGS=(
    algorithm.adv_estimator=grpo
    algorithm.use_kl_in_reward=False
    data.train_files="$DATA_DIR/dapo_math_17k.parquet"
    data.val_files="$DATA_DIR/math_test.parquet"
    data.train_batch_size=256
    data.max_prompt_length="$MAX_PROMPT"
    data.max_response_length="$MAX_RESPONSE"
    data.filter_overlong_prompts=True
    data.truncation=error
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    actor_rollout_ref.actor.strategy=fsdp2
    actor_rollout_ref.ref.strategy=fsdp2
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.ppo_mini_batch_size=64    # 256 prompts / 64 = 4 mini-batches = 4 optimizer steps a pass
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.entropy_coeff=0.001
    actor_rollout_ref.actor.calculate_entropy=True
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=8
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16
    trainer.critic_warmup=0
    trainer.logger='["console"]'
    trainer.project_name=sfpo_verl
    trainer.n_gpus_per_node="$NGPUS"
    trainer.nnodes=1
    trainer.save_freq=20
    trainer.test_freq=10
    trainer.total_epochs=1
)
