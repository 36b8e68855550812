#!/usr/bin/env bash
# What only a GPU can check of SFPO in verl, on one GPU, offline, in a few minutes (NOT run in this project's CI,
# which has no GPU). Needs an env with verl 0.9.x, vLLM and this checkout:
#     pip install "verl[vllm]==0.9.1" && pip install --no-deps -e .
#     bash examples/verl/gpu_check.sh                 # OUT=/tmp/sfpo_gpu_check by default
# 1. the worker contract (tests/integrations/verl_contract_worker.py) on CUDA with FSDP1 (verl's default strategy,
#    which fails on CPU) and with FSDP2 + parameter offload: α=1 ≡ ppo_epochs=K+1 and switched off ≡ ppo_epochs=1
#    within 10× the device's own rerun noise, exact reposition on the gathered parameters, one LR step per step;
# 2. a short main_ppo run (trainer_mode=sfpo, vLLM rollouts, FSDP2 with parameter and optimizer offload, a tiny local
#    Qwen2, a toy reward): 4 steps with switch=fixed_step at 3 -> passes 3,3,3,1 in verl's own logs, the switch saved
#    with the checkpoints; then a resume for step 5, which must stay switched off.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-/tmp/sfpo_gpu_check}
rm -rf "$OUT" && mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false SFPO_VERL_DEVICE=cuda
export PYTHONPATH="$ROOT/tests/integrations:$ROOT/tests:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
python examples/verl/gpu_check.py prepare "$OUT"

for variant in "fsdp" "fsdp2 offload"; do
    # shellcheck disable=SC2086  # variant is "strategy [offload]"
    python -m torch.distributed.run --nproc_per_node=1 --master_port=29561 tests/integrations/verl_contract_worker.py \
        "$OUT/model" "$OUT/contract_${variant// /_}.json" $variant
    python examples/verl/gpu_check.py contract "$OUT/contract_${variant// /_}.json"
done

run_ppo() {  # $1: total steps, $2: log file
    python3 -m verl.trainer.main_ppo \
        algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False \
        data.train_files="$OUT/train.parquet" data.val_files="$OUT/val.parquet" \
        data.train_batch_size=8 data.max_prompt_length=16 data.max_response_length=8 data.truncation=error \
        actor_rollout_ref.model.path="$OUT/model" \
        +actor_rollout_ref.model.override_config.attn_implementation=sdpa \
        actor_rollout_ref.actor.strategy=fsdp2 actor_rollout_ref.ref.strategy=fsdp2 \
        actor_rollout_ref.actor.optim.lr=1e-4 actor_rollout_ref.actor.ppo_epochs=1 \
        actor_rollout_ref.actor.ppo_mini_batch_size=4 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
        actor_rollout_ref.actor.use_kl_loss=False actor_rollout_ref.actor.entropy_coeff=0.001 \
        actor_rollout_ref.actor.calculate_entropy=True \
        actor_rollout_ref.actor.fsdp_config.param_offload=True actor_rollout_ref.actor.fsdp_config.optimizer_offload=True \
        actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.enforce_eager=True \
        actor_rollout_ref.rollout.gpu_memory_utilization=0.3 actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
        reward.custom_reward_function.path="$OUT/reward.py" \
        trainer.v1.trainer_mode=sfpo +sfpo.inner_steps=2 +sfpo.alpha=0.8 +sfpo.switch=fixed_step +sfpo.switch_stop_step=3 \
        trainer.n_gpus_per_node=1 trainer.nnodes=1 trainer.logger='["console"]' trainer.val_before_train=False \
        trainer.test_freq=-1 trainer.save_freq=2 trainer.total_training_steps="$1" trainer.total_epochs=100 \
        trainer.default_local_dir="$OUT/ckpt" trainer.resume_mode=auto trainer.project_name=sfpo_gpu_check \
        trainer.experiment_name=tiny 2>&1 | tee "$2"
}
run_ppo 4 "$OUT/run.log"
run_ppo 5 "$OUT/resume.log"
python examples/verl/gpu_check.py run "$OUT" "$OUT/run.log" "$OUT/resume.log"
echo "GPU check passed"
