"""The ``sfpo`` config group of a verl run and the settings SFPO refuses, each with its reason.

verl's configs are strict dataclasses, so SFPO's fields live in a top-level group (``+sfpo.inner_steps=3`` on the
command line) read by the SFPO trainer, which checks the rest of the verl config against it before anything starts.
Imports neither torch nor verl.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from sfpo.core.params import SFPOParams

__all__ = ["SFPOVerlConfig", "check_verl_config", "FSDP_STRATEGIES"]

FSDP_STRATEGIES = ("fsdp", "fsdp2")


@dataclass
class SFPOVerlConfig:
    """The ``sfpo`` group. One SFPO step is one actor update of verl (one rollout batch): K fast passes over all
    mini-batches, the reposition, one slow pass; one pass after the switch."""

    inner_steps: int = 3
    """K: fast passes over each rollout batch (Stage I)."""
    alpha: float = 0.8
    """α: reposition θ̃ = θ0 + α(θK − θ0) after the K-th pass. 0 makes every step one plain pass; 1 keeps θK."""
    outer_momentum: float = 0.0
    """μ (issue 24's outer Nesterov momentum): only 0 is accepted under verl — see validate()."""
    optimizer_state: str = "carry"
    """Optimizer state at the reposition: 'carry' (official); 'reset' and 'restore' only under FSDP1 (FSDP2 keys
    the optimizer's state by DTensor, see check_verl_config)."""
    switch: str = "entropy"
    """When SFPO turns off for good: 'entropy' (z-score of the slow pass's entropy), 'fixed_step', 'never'."""
    switch_window: int = 30
    """ω: entropies in the z-score window."""
    switch_threshold: float = 1.0
    """τ: switch off when z ≥ τ."""
    switch_two_sided: bool = False
    """Switch off on |z| ≥ τ (Algorithm 1's formula)."""
    switch_stop_step: int | None = None
    """switch='fixed_step': SFPO steps before this one run SFPO."""

    @property
    def sfpo_params(self) -> SFPOParams:
        """SFPO's own parameter set, built from this group (its rules are written once there)."""
        return SFPOParams.from_fields(self, prefix="sfpo.")

    @property
    def runs_stage_one(self) -> bool:
        return self.sfpo_params.runs_stage_one

    @classmethod
    def from_mapping(cls, group: Mapping[str, Any] | None) -> "SFPOVerlConfig":
        group = dict(group or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(f"unknown sfpo option(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**group)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        self.sfpo_params  # noqa: B018 — builds it: raises ValueError("sfpo.<the broken rule's reason>")
        if self.outer_momentum:
            raise NotImplementedError(
                "sfpo.outer_momentum > 0 is not supported under verl: the momentum is a buffer each actor rank keeps "
                "across rollout batches, and verl's checkpoint manager does not save worker state beyond the model "
                "and optimizer, so a resumed run would restart it from zero without a word. Use the native trainer "
                "or SFPOTrainer (TRL), which checkpoint it.")

    def plan(self, active: bool) -> dict[str, Any]:
        """What the driver hands the actor workers with each batch."""
        return {"inner_steps": self.inner_steps, "alpha": self.alpha, "optimizer_state": self.optimizer_state,
                "active": bool(active)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_verl_config(config: Mapping[str, Any]) -> SFPOVerlConfig:
    """Parse ``config.sfpo`` and refuse the verl settings SFPO cannot run under. ``config`` is verl's whole
    (OmegaConf) trainer config; returns the parsed group."""
    sfpo = SFPOVerlConfig.from_mapping(config.get("sfpo"))
    actor = config["actor_rollout_ref"]["actor"]
    strategy = actor.get("strategy")
    if strategy == "megatron":
        raise NotImplementedError(
            "SFPO does not support actor_rollout_ref.actor.strategy=megatron: megatron-core's distributed optimizer "
            "keeps the fp32 main parameters inside the optimizer and copies them over the module weights after "
            "every step, so a reposition of the module weights would be overwritten. Use strategy=fsdp2 (or fsdp).")
    if strategy not in FSDP_STRATEGIES:
        raise NotImplementedError(
            f"SFPO supports actor_rollout_ref.actor.strategy in {FSDP_STRATEGIES}, got {strategy!r}: the reposition "
            "must act on the tensors the optimizer steps (the fp32 masters), and only FSDP's were checked to be "
            "the module's own (sharded) parameters.")
    if sfpo.runs_stage_one and actor.get("ppo_epochs", 1) != 1:
        raise ValueError(
            f"actor_rollout_ref.actor.ppo_epochs={actor.get('ppo_epochs')} cannot be combined with SFPO: SFPO sets "
            f"the passes over each rollout batch itself (inner_steps + 1 = {sfpo.inner_steps + 1} while on, 1 "
            "after the switch), each pass one PPO epoch. Set ppo_epochs=1.")
    entropy_on = actor.get("calculate_entropy", False) or actor.get("entropy_coeff", 0.0) != 0.0
    if sfpo.runs_stage_one and sfpo.switch == "entropy" and not entropy_on:
        raise ValueError(
            "sfpo.switch=entropy watches the slow pass's policy entropy, which verl computes only with "
            "actor_rollout_ref.actor.calculate_entropy=True (or entropy_coeff != 0; the paper: 0.001). Set one, or "
            "choose sfpo.switch=fixed_step / never.")
    if sfpo.optimizer_state != "carry" and strategy == "fsdp2":
        raise NotImplementedError(
            f"sfpo.optimizer_state={sfpo.optimizer_state!r} with FSDP2: the optimizer keys its state by the DTensor "
            "parameters while the reposition acts on their local shards; use 'carry' (the official choice).")
    mode = config["trainer"].get("v1", {}).get("trainer_mode")
    if mode not in (None, "sfpo"):
        raise ValueError(f"trainer.v1.trainer_mode must be 'sfpo' for the SFPO trainer, got {mode!r}")
    return sfpo
