"""sfpo.core: the SFPO update, base policy losses, group advantages and the switch-off rule.

Imports torch and nothing else, so any PyTorch RL pipeline can call it.
"""

from sfpo.core.advantages import ADVANTAGES, compute_advantages, drgrpo_advantages, grpo_advantages, rloo_advantages
from sfpo.core.losses import (LossConfig, aggregate, entropy_from_logits, head_logprobs, loss_normalizer, policy_loss,
                             token_logprobs)
from sfpo.core.params import SFPOParams
from sfpo.core.slow_fast import SlowFastUpdate
from sfpo.core.switch import EntropySwitch, FixedStepSwitch, NeverSwitch, Switch, make_switch

__all__ = [
    "ADVANTAGES", "compute_advantages", "grpo_advantages", "drgrpo_advantages", "rloo_advantages",
    "LossConfig", "policy_loss", "aggregate", "loss_normalizer", "token_logprobs", "entropy_from_logits", "head_logprobs",
    "SFPOParams", "SlowFastUpdate", "Switch", "EntropySwitch", "FixedStepSwitch", "NeverSwitch", "make_switch",
]
