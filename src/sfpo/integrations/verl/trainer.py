"""The driver side: verl's synchronous PPO trainer with the SFPO switch, selected by ``trainer.v1.trainer_mode=sfpo``.

It checks the ``sfpo`` group against the verl config, puts the SFPO actor worker into the worker group, hands the
workers a plan (K, α, optimizer state, whether SFPO is on) with each actor update, feeds the switch with the slow
pass's entropy they return, and saves the switch beside verl's checkpoint (``sfpo_state.json``) so a resumed run
continues it. Rollouts, rewards, advantages, old log-probs (at θ0), critic and logging stay verl's.
"""

from __future__ import annotations

import json
import logging
import os

import ray
from omegaconf import open_dict

from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from sfpo.core import make_switch
from sfpo.integrations.verl.config import check_verl_config
from sfpo.integrations.verl.worker import PLAN_KEY, SFPOActorRolloutRefWorker

__all__ = ["SFPOVerlTrainer", "STATE_FILE", "TRAINER_MODE"]

logger = logging.getLogger(__name__)

TRAINER_MODE = "sfpo"
STATE_FILE = "sfpo_state.json"  # in verl's global_step_N folder; the workers keep nothing across SFPO steps


@register_trainer(TRAINER_MODE)
class SFPOVerlTrainer(PPOTrainerSync):
    """``PPOTrainerSync`` whose actor updates are SFPO steps. Every other setting keeps its verl meaning."""

    def __init__(self, config) -> None:
        self.sfpo = check_verl_config(config)
        # verl's base trainer branches on trainer_mode == "sync" (replay buffer, refills, queue checkpoints):
        # SFPO runs on that schedule, so the rest of verl must see "sync"
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        super().__init__(config)
        s = self.sfpo
        self.switch = make_switch(s.switch if s.runs_stage_one else "never", window=s.switch_window,
                                  threshold=s.switch_threshold, two_sided=s.switch_two_sided,
                                  stop_step=s.switch_stop_step)
        self.sfpo_steps = 0  # actor updates done; with parameter_sync_step > 1 several per global step

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        for role in (Role.Actor, Role.ActorRollout, Role.ActorRolloutRef):
            if role in self.role_worker_mapping:
                self.role_worker_mapping[role] = ray.remote(SFPOActorRolloutRefWorker)

    def _update_actor(self, batch, metrics):
        batch.extra_info[PLAN_KEY] = self.sfpo.plan(self.switch.active)
        batch = super()._update_actor(batch, metrics)
        observe_step(self, metrics)
        return batch

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self):
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        os.makedirs(folder, exist_ok=True)
        # before verl's save, which writes latest_checkpointed_iteration.txt last: a folder it points at has ours
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump(state_dict(self), f)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.global_steps == 0:
            return
        if self.config.trainer.resume_mode == "resume_path":
            folder = self.config.trainer.resume_from_path
        else:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        path = os.path.join(folder, STATE_FILE)
        if not os.path.isfile(path):
            logger.warning("%s has no %s (not saved by the SFPO trainer?): the switch starts over", folder, STATE_FILE)
            return
        with open(path) as f:
            load_state_dict(self, json.load(f))


def observe_step(trainer, metrics: dict) -> None:
    """After an actor update: move the workers' ``sfpo/*`` metrics out of verl's ``actor/`` prefix, feed the switch
    with the slow pass's entropy, and report the switch."""
    for key in [k for k in metrics if k.startswith("actor/sfpo/")]:
        metrics[key[len("actor/"):]] = metrics.pop(key)
    entropy = metrics.get("sfpo/entropy_slow")
    if trainer.switch.name == "entropy" and entropy is None:
        raise RuntimeError("the SFPO workers returned no slow-pass entropy (sfpo/entropy_slow): set "
                           "actor_rollout_ref.actor.calculate_entropy=True")
    was_on = trainer.switch.active
    trainer.switch.update(trainer.sfpo_steps, entropy)
    if was_on and not trainer.switch.active:
        logger.info("SFPO switched off after SFPO step %d: one pass per rollout batch from now on", trainer.sfpo_steps)
    trainer.sfpo_steps += 1
    metrics.update(trainer.switch.metrics())


def state_dict(trainer) -> dict:
    return {"switch": trainer.switch.state_dict(), "sfpo_steps": trainer.sfpo_steps, "sfpo": trainer.sfpo.to_dict()}


def load_state_dict(trainer, state: dict) -> None:
    if state["sfpo"] != trainer.sfpo.to_dict():
        logger.warning("the sfpo group was %s in the checkpoint and is %s now", state["sfpo"], trainer.sfpo.to_dict())
    trainer.switch.load_state_dict(state["switch"])
    trainer.sfpo_steps = state["sfpo_steps"]
