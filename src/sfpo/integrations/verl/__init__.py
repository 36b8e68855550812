"""SFPO on verl ≥ 0.9 (extra ``sfpo[verl]``): ``trainer.v1.trainer_mode=sfpo`` plus a ``+sfpo.*`` group.

This package is verl's ``verl.plugins`` entry point: ``import verl`` imports it in every process, which registers the
``sfpo`` trainer (driver: the switch, checkpoints) whose actor worker runs each actor update as one SFPO step.
docs/verl.md has the details; ``config`` (the group and the refused settings) imports neither torch nor verl.
"""

from sfpo.integrations.verl.config import SFPOVerlConfig, check_verl_config
from sfpo.integrations.verl.trainer import STATE_FILE, TRAINER_MODE, SFPOVerlTrainer
from sfpo.integrations.verl.worker import PLAN_KEY, SFPOActorRolloutRefWorker, SFPOTrainingWorker

__all__ = ["SFPOVerlConfig", "check_verl_config", "SFPOVerlTrainer", "SFPOTrainingWorker", "SFPOActorRolloutRefWorker",
           "PLAN_KEY", "STATE_FILE", "TRAINER_MODE"]
