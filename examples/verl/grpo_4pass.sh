#!/usr/bin/env bash
# The control: GRPO with as many passes per rollout batch as SFPO (K+1 = 4), without the reposition or the switch,
# i.e. SFPO with α=1 and switch=never (tests/integrations/test_verl.py checks that equality bit for bit).
source "$(dirname "$0")/common.sh"
python3 -m verl.trainer.main_ppo "${COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_epochs=4 \
    trainer.experiment_name=qwen2.5-math-1.5b_grpo_4pass "$@"
