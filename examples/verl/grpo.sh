#!/usr/bin/env bash
# The GRPO twin of sfpo.sh: verl's own synchronous trainer, one pass (4 optimizer steps) per rollout batch.
source "$(dirname "$0")/common.sh"
python3 -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_epochs=1 \
    trainer.experiment_name=qwen2.5-math-1.5b_grpo "$@"
