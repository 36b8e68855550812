#!/usr/bin/env bash
# SFPO in verl (pip install "sfpo[verl]"): K=3 fast passes, α=0.8, entropy switch ω=30, τ=1 (the paper's setting).
# The only differences from grpo.sh are the trainer mode and the sfpo group; ppo_epochs stays 1 (SFPO sets passes).
source "$(dirname "$0")/common.sh"
python3 -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_epochs=1 \
    trainer.v1.trainer_mode=sfpo \
    +sfpo.inner_steps=3 \
    +sfpo.alpha=0.8 \
    +sfpo.switch=entropy \
    +sfpo.switch_window=30 \
    +sfpo.switch_threshold=1.0 \
    trainer.experiment_name=qwen2.5-math-1.5b_sfpo "$@"
