"""SFPO in TRL: ``SFPOConfig`` / ``SFPOTrainer`` are drop-ins for ``GRPOConfig`` / ``GRPOTrainer`` (TRL 1.16).

One generation batch is one SFPO training step: ``sfpo.core.SlowFastUpdate`` snapshots θ0 before TRL generates
(and computes old log-probs at θ0), TRL runs K+1 passes over the batch, the reposition follows the K-th. Rewards,
loss, vLLM, PEFT, logging and accelerate's DDP/FSDP/DeepSpeed stay TRL's. It never changes the loss. Under DeepSpeed
ZeRO the reposition acts on ZeRO's fp32 master partitions (``sfpo.integrations.deepspeed``); see docs/trl.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer

from sfpo.core import SlowFastUpdate, make_switch
from sfpo.core.params import LR_STEPPING, OPTIMIZER_STATE_POLICIES, SWITCHES, SFPOParams
from sfpo.integrations.preemption import PreemptionCallback
from sfpo.integrations.sharding import DTensor, local_shards

__all__ = ["SFPOConfig", "SFPOTrainer", "STATE_FILE", "local_shards"]

logger = logging.getLogger(__name__)

STATE_FILE = "sfpo_state_rank{rank}.pt"  # one per process: under FSDP the anchor is sharded like the weights


@dataclass
class SFPOConfig(GRPOConfig):
    r"""``GRPOConfig`` plus the SFPO fields; every GRPO field keeps its meaning.

    One *training step* is one generation batch: K fast passes, the reposition, one slow pass, i.e.
    ``(K+1) · steps_per_generation / gradient_accumulation_steps`` optimizer steps while SFPO is on, and one pass
    (plain GRPO) after the switch. ``max_steps`` still counts optimizer steps, so at equal ``max_steps`` an SFPO run
    sees K+1 times fewer generation batches than GRPO; ``num_train_epochs`` counts prompts and is unchanged.
    """

    inner_steps: int = field(default=3, metadata={"help": "K: fast passes over each generation batch (Stage I)."})
    alpha: float = field(default=0.8, metadata={
        "help": "α: reposition θ̃ = θ0 + α(θK − θ0) after the K-th pass (Stage II). 0 skips Stage I (plain GRPO); "
                "1 keeps θK (K+1 plain passes)."})
    outer_momentum: float = field(default=0.0, metadata={
        "help": "μ: outer Nesterov momentum on θK − θ0 across training steps (issue 24's variant; 0 = the paper's "
                "reposition). One more copy of the trainable parameters (per rank: of its shard), saved with the "
                "SFPO state of each checkpoint."})
    optimizer_state: str = field(default="carry", metadata={
        "help": "Optimizer state at the reposition: 'carry' (official code), 'reset', or 'restore' (the state "
                "saved at θ0).", "choices": list(OPTIMIZER_STATE_POLICIES)})
    lr_stepping: str = field(default="train_step", metadata={
        "help": "'train_step' (official): the LR is held for a whole training step and catches up at its end, so "
                "warmup_steps and max_steps keep counting optimizer steps; 'optimizer_step': TRL's stepping.",
        "choices": list(LR_STEPPING)})
    switch: str = field(default="entropy", metadata={
        "help": "When SFPO turns off for good: 'entropy' (z-score of the slow pass's entropy), 'fixed_step', "
                "'never'.", "choices": list(SWITCHES)})
    switch_window: int = field(default=30, metadata={"help": "ω: entropies in the z-score window."})
    switch_threshold: float = field(default=1.0, metadata={"help": "τ: switch off when z ≥ τ."})
    switch_two_sided: bool = field(default=False, metadata={"help": "Switch off on |z| ≥ τ (Algorithm 1's formula)."})
    switch_stop_step: int | None = field(default=None, metadata={
        "help": "switch='fixed_step': training steps (generation batches) before this one run SFPO."})
    # Redefined only to tell "left at the default" from "set": SFPO owns the number of passes per batch.
    num_iterations: int | None = field(default=None, metadata={
        "help": "Passes over each generation batch. SFPO sets it to inner_steps + 1 (1 when alpha or inner_steps "
                "is 0); leave it unset."})

    @property
    def sfpo_params(self) -> SFPOParams:
        """SFPO's own parameter set, built from these fields (its rules are written once there)."""
        return SFPOParams.from_fields(self)

    @property
    def runs_stage_one(self) -> bool:
        """Whether Stage I ever runs (Algorithm 1: α = 0 or K = 0 is a plain step)."""
        return self.sfpo_params.runs_stage_one

    def __post_init__(self) -> None:
        self.sfpo_params  # noqa: B018 — builds it: raises ValueError with the broken rule's reason
        passes = self.inner_steps + 1 if self.runs_stage_one else 1
        if self.num_iterations not in (None, 1, passes):
            why = (f"SFPO runs inner_steps + 1 = {passes} passes over each generation batch and sets TRL's "
                   "num_iterations to that itself; each pass is one GRPO iteration (μ = 1)" if self.runs_stage_one else
                   "alpha = 0 or inner_steps = 0 makes every training step one plain GRPO pass")
            raise ValueError(f"num_iterations={self.num_iterations} cannot be combined with SFPO: {why}. "
                             "Leave num_iterations unset.")
        self.num_iterations = passes
        super().__post_init__()
        if self.steps_per_generation % self.gradient_accumulation_steps:
            raise ValueError(
                f"steps_per_generation ({self.steps_per_generation}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}): SFPO repositions between two "
                "passes over a generation batch, so every pass must end on an optimizer step. One pass is then "
                "steps_per_generation / gradient_accumulation_steps optimizer steps (the paper: 4). If you set "
                "generation_batch_size instead, steps_per_generation = generation_batch_size / "
                "(per_device_train_batch_size × number of processes).")
        if self.runs_stage_one and self.switch != "never" and self.dataloader_num_workers:
            raise ValueError(
                f"dataloader_num_workers={self.dataloader_num_workers} cannot be combined with switch="
                f"{self.switch!r}: after the switch each generation batch gets one pass and fresh prompts, and which "
                "prompts come next is decided when the sampler is asked for them; worker processes ask ahead of "
                "that decision. Use dataloader_num_workers=0 (prompts are cheap to load) or switch='never'.")


class _HeldScheduler:
    """Holds the LR for a whole training step (the official code steps its scheduler once per training step).

    The Trainer calls ``step()`` after every optimizer step; the calls are counted and replayed at the end of the
    training step, so the schedule's horizon and warm-up keep counting optimizer steps as in TRL.
    """

    def __init__(self, scheduler: LRScheduler) -> None:
        self.scheduler = scheduler
        self.pending = 0
        self.release = False  # set by the trainer on the training step's last optimizer step

    def step(self) -> None:
        self.pending += 1
        if self.release:
            for _ in range(self.pending):
                self.scheduler.step()
            self.pending, self.release = 0, False

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.pending = state["pending"]

    def __getattr__(self, name: str) -> Any:  # get_last_lr, optimizer, ... as the Trainer expects them
        return getattr(self.scheduler, name)


class _StepSampler(torch.utils.data.Sampler):
    """TRL's ``RepeatSampler`` with the repeat count of each generation batch following the switch.

    A micro-step ("tick") consumes one generation batch's worth of indices. While SFPO is on, a batch is repeated
    for (K+1)·S ticks (K+1 passes of S micro-steps), exactly as ``RepeatSampler`` with ``num_iterations = K+1``
    orders it; after the switch, for S ticks, so each plain step gets new prompts, as in the paper. The batch of a
    tick is a pure function of the tick and of the tick where SFPO went off; both are read when the tick is asked
    for, which the loader does at most one optimizer step ahead, after the switch decision.
    """

    def __init__(self, *, num_rows: int, prompts_per_batch: int, group: int, ticks_per_pass: int, passes: int,
                 shuffle: bool, seed: int, epoch: Callable[[], int], switch_tick: Callable[[], int | None]) -> None:
        self.num_rows, self.prompts_per_batch, self.group = num_rows, prompts_per_batch, group
        self.ticks_per_pass, self.passes, self.shuffle = ticks_per_pass, passes, shuffle
        self.batches_per_perm = num_rows // prompts_per_batch  # incomplete batches are dropped, as in TRL
        self.ticks_per_epoch = self.batches_per_perm * passes * ticks_per_pass
        self.epoch, self.switch_tick = epoch, switch_tick
        self._generator = torch.Generator().manual_seed(seed)
        self._perms: list[list[int]] = []

    def __len__(self) -> int:
        return self.ticks_per_epoch * self.prompts_per_batch * self.group

    def batch_of_tick(self, tick: int) -> int:
        """Index, in the endless stream of generation batches, of the batch that global micro-step ``tick`` uses."""
        on = self.passes * self.ticks_per_pass
        off_from = self.switch_tick()
        if off_from is None or tick < off_from:
            return tick // on
        return off_from // on + (tick - off_from) // self.ticks_per_pass

    def _permutation(self, k: int) -> list[int]:
        # RepeatSampler draws one permutation per epoch from one seeded generator; draw the same sequence.
        if not self.shuffle:
            return list(range(self.num_rows))
        while len(self._perms) <= k:
            self._perms.append(torch.randperm(self.num_rows, generator=self._generator).tolist())
        return self._perms[k]

    def __iter__(self):
        start = self.epoch() * self.ticks_per_epoch
        for tick in range(start, start + self.ticks_per_epoch):
            b = self.batch_of_tick(tick)
            perm, i = self._permutation(b // self.batches_per_perm), b % self.batches_per_perm
            for row in perm[i * self.prompts_per_batch:(i + 1) * self.prompts_per_batch]:
                yield from [row] * self.group


@dataclass
class _StepState:
    """Bookkeeping of the current training step, saved with every checkpoint."""

    index: int = 0  # training steps (generation batches) finished
    tick: int = 0  # micro-steps done since training began
    switch_tick: int | None = None  # first micro-step of the first plain step after the switch
    pass_loss: float = 0.0  # sum of the current pass's micro-step losses
    entropy_sum: float = 0.0  # the slow pass's token entropy, summed over its micro-steps, for the switch
    entropy_count: int = 0


class _StepHook(TrainerCallback):
    """Lets the trainer act right after each optimizer step, before the LR steps and before any checkpoint."""

    def __init__(self, trainer: "SFPOTrainer") -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._after_optimizer_step()

    def on_train_end(self, args, state, control, **kwargs):
        update = self.trainer.sfpo
        if update is not None and update.phase != "idle":
            logger.warning("training stopped inside an SFPO step (phase %r after %d fast passes): the final weights "
                           "are not those of a finished step; make max_steps end on a step boundary",
                           update.phase, update.fast_done)


class SFPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that runs each generation batch as one SFPO training step; same arguments, ``args`` an
    ``SFPOConfig``. The ``sfpo/*`` metrics join TRL's at the training step's last optimizer step."""

    def __init__(self, model, reward_funcs=None, args: SFPOConfig | None = None, *rest, **kwargs) -> None:
        if args is None:
            args = SFPOConfig()
        if not isinstance(args, SFPOConfig):
            raise TypeError(f"SFPOTrainer needs an SFPOConfig, got {type(args).__name__}: replace GRPOConfig(...) by "
                            "SFPOConfig(...) with the same arguments")
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        self._zero = None  # sfpo.integrations.deepspeed.ZeroPartitions under DeepSpeed, built with self.sfpo
        if self.is_deepspeed_enabled:
            from sfpo.integrations.deepspeed import check_config

            check_config(self.accelerator.state.deepspeed_plugin.deepspeed_config, args.optimizer_state)
        self.switch = make_switch(args.switch if args.runs_stage_one else "never", window=args.switch_window,
                                  threshold=args.switch_threshold, two_sided=args.switch_two_sided,
                                  stop_step=args.switch_stop_step)
        self.sfpo: SlowFastUpdate | None = None  # built on the first step, once the optimizer holds its params
        self._sfpo_step = _StepState()
        self.add_callback(_StepHook(self))
        self._preemption = PreemptionCallback()  # SIGTERM/SIGINT: save at the next optimizer step, stop, exit 143/130
        self.add_callback(self._preemption)
        if self._sampler_follows_switch and isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            logger.warning("with an IterableDataset TRL repeats each prompt batch K+1 times in the stream, so after "
                           "the switch SFPOTrainer samples fresh completions for the same prompts K+1 times in a row")

    @property
    def _sampler_follows_switch(self) -> bool:
        return self.args.runs_stage_one and self.args.switch != "never"

    # -------------------------------------------------------------------------------- the training step
    def _slow_fast(self) -> SlowFastUpdate:
        if self.sfpo is None:
            # The reposition must act on what the optimizer updates: under FSDP, this rank's shards; under ZeRO,
            # this rank's fp32 master partitions.
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            if self.is_deepspeed_enabled:
                from sfpo.integrations.deepspeed import ZeroPartitions

                self._zero = ZeroPartitions(self.optimizer)
                params = self._zero.masters
            if self.args.optimizer_state != "carry" and any(isinstance(p, DTensor) for p in params):
                raise NotImplementedError(
                    f"optimizer_state={self.args.optimizer_state!r} with FSDP2: the optimizer keys its state by the "
                    "DTensor parameters while the reposition acts on their local shards; use 'carry'")
            self.sfpo = SlowFastUpdate(local_shards(params), inner_steps=self.args.inner_steps, alpha=self.args.alpha,
                                       optimizer=self._zero.optimizer if self._zero is not None else
                                       getattr(self.optimizer, "optimizer", self.optimizer),
                                       optimizer_state=self.args.optimizer_state,
                                       outer_momentum=self.args.outer_momentum)
        return self.sfpo

    def training_step(self, model, inputs, num_items_in_batch):
        update = self._slow_fast()
        if update.phase == "idle":
            self._begin_step(update)
        loss = super().training_step(model, inputs, num_items_in_batch)  # generates on the step's first micro-step
        state = self._sfpo_step
        state.tick += 1
        state.pass_loss += float(loss)
        entropy = self._metrics["train"].get("entropy")
        if update.phase == "slow" and entropy:
            state.entropy_sum += entropy[-1]
            state.entropy_count += 1
        return loss

    def _begin_step(self, update: SlowFastUpdate) -> None:
        update.begin(active=self.switch.active)  # snapshot θ0, before TRL generates and computes old log-probs
        self.num_iterations = update.inner_steps + 1 if update.phase == "fast" else 1
        # TRL generates when `_step % (steps_per_generation · num_iterations) == 0`; counting its micro-steps from
        # each step's start makes that "once, at the step's first micro-step", whatever the passes were before.
        self._step = 0
        self._buffered_inputs = None
        self._sfpo_step.entropy_sum, self._sfpo_step.entropy_count = 0.0, 0

    def _after_optimizer_step(self) -> None:
        if self.sfpo is None or self._step % self.args.steps_per_generation:
            return  # inside a pass
        state = self._sfpo_step
        optimizer_steps = self.args.steps_per_generation // self.args.gradient_accumulation_steps
        loss = self._reduce(state.pass_loss / optimizer_steps, "mean")
        state.pass_loss = 0.0
        repositions = self.sfpo.phase == "fast" and self.sfpo.fast_done + 1 == self.sfpo.inner_steps
        self.sfpo.record_pass(loss)  # after the K-th fast pass this repositions θ in place
        if repositions and self._zero is not None:
            self._zero.refresh()  # ZeRO's module weights from the repositioned masters: the next pass sees θ̃
        if self.sfpo.phase == "done":
            self._end_step()

    def _end_step(self) -> None:
        metrics = self.sfpo.end()
        state = self._sfpo_step
        entropy = state.entropy_sum / state.entropy_count if state.entropy_count else None
        self.switch.update(state.index, entropy)
        state.index += 1
        if not self.switch.active and state.switch_tick is None:
            state.switch_tick = state.tick
            logger.info("SFPO switched off after training step %d: one pass per generation batch from now on",
                        state.index - 1)
        if (self.is_fsdp_enabled or self._zero is not None) and "sfpo/drift_norm" in metrics:
            # the core measured this rank's shard; each norm is the norm over all shards
            for key in ("sfpo/drift_norm", "sfpo/reposition_norm", "sfpo/momentum_norm"):
                if key in metrics:
                    metrics[key] = self._reduce(metrics[key] ** 2, "sum") ** 0.5
        metrics.update(self.switch.metrics())
        for key, value in metrics.items():
            self._metrics["train"][key].append(value)
        if isinstance(self.lr_scheduler, _HeldScheduler):
            self.lr_scheduler.release = True

    def _reduce(self, value: float, how: str) -> float:
        if self.accelerator.num_processes == 1:
            return value
        return self.accelerator.reduce(torch.tensor(value, device=self.accelerator.device), how).item()

    # ------------------------------------------------------------------------------- data, LR, checkpoints
    def _get_train_sampler(self, dataset=None):
        if not self._sampler_follows_switch:
            return super()._get_train_sampler(dataset)
        dataset = self.train_dataset if dataset is None else dataset
        return _StepSampler(
            num_rows=len(dataset), prompts_per_batch=self.args.generation_batch_size // self.num_generations,
            group=self.num_generations, ticks_per_pass=self.args.steps_per_generation,
            passes=self.args.inner_steps + 1, shuffle=self.shuffle_dataset, seed=self.args.seed,
            epoch=lambda: int(self.state.epoch or 0), switch_tick=lambda: self._sfpo_step.switch_tick)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if (self.args.lr_stepping == "train_step" and isinstance(scheduler, LRScheduler)
                and not isinstance(scheduler, ReduceLROnPlateau)):
            self.lr_scheduler = scheduler = _HeldScheduler(scheduler)
        return scheduler

    def _state_path(self, folder: str) -> str:
        return os.path.join(folder, STATE_FILE.format(rank=self.accelerator.process_index))

    def _save_rng_state(self, output_dir: str) -> None:
        # SFPO's state is the last per-rank file of a checkpoint, renamed into place, and TRL's trainer_state.json
        # follows it: a folder a kill cut short lacks one of the two and train() skips it. The hub push and the
        # rotation of old checkpoints come after both. (save_only_model checkpoints resume nothing: no state.)
        super()._save_rng_state(output_dir)
        mid_step = self.sfpo is not None and self.sfpo.phase != "idle"
        path = self._state_path(output_dir)
        torch.save({
            "update": None if self.sfpo is None else self.sfpo.state_dict(),  # holds θ0 inside a step
            "switch": self.switch.state_dict(),
            "step": asdict(self._sfpo_step),
            "trl_step": self._step,
            "num_iterations": self.num_iterations,
            # The generation batch and its old log-probs at θ0: a resume inside a step must not regenerate.
            "buffered_inputs": self._buffered_inputs if mid_step else None,
        }, path + ".tmp")
        os.replace(path + ".tmp", path)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """``GRPOTrainer.train``; with ``resume_from_checkpoint=True`` newer checkpoints that a kill left
        incomplete are skipped with a warning."""
        if resume_from_checkpoint is True and os.path.isdir(self.args.output_dir):
            resume_from_checkpoint = _last_complete(self.args.output_dir, self.accelerator.num_processes)
        try:
            out = super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._preemption.handler.__exit__()
        self._preemption.raise_if_preempted(self)
        return out

    def _run_epoch(self, *args, **kwargs):
        # transformers runs one more optimizer step (and saves it) when resumed from a checkpoint that already
        # reached max_steps: the step-count check comes after a step. A finished run trains nothing more here.
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            if not self.control.should_training_stop:
                logger.info("step %d already reached max_steps=%d: nothing left to train", self.state.global_step,
                            self.state.max_steps)
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = self._state_path(checkpoint)
        if not os.path.isfile(path):
            logger.warning("%s has no SFPO state (not saved by SFPOTrainer?): a new training step starts here and "
                           "the switch starts over", checkpoint)
            self._sfpo_step.tick = self.state.global_step * self.args.gradient_accumulation_steps
            return
        saved = torch.load(path, map_location=self.accelerator.device, weights_only=True)
        if saved["update"] is not None:
            self._slow_fast().load_state_dict(saved["update"])
        self.switch.load_state_dict(saved["switch"])
        self._sfpo_step = _StepState(**saved["step"])
        self._step, self.num_iterations = saved["trl_step"], saved["num_iterations"]
        self._buffered_inputs = saved["buffered_inputs"]


def _last_complete(output_dir: str, ranks: int) -> str | bool:
    """The newest checkpoint-N holding a readable trainer_state.json and every rank's SFPO state (written last);
    True, for TRL's own search and error, when there is no checkpoint at all."""
    def complete(folder: str) -> bool:
        try:
            with open(os.path.join(folder, TRAINER_STATE_NAME)) as f:
                json.load(f)
        except (OSError, ValueError):  # missing, or cut off mid-write
            return False
        return all(os.path.isfile(os.path.join(folder, STATE_FILE.format(rank=r))) for r in range(ranks))

    names = [n for n in os.listdir(output_dir) if re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-\d+", n)]
    skipped = []
    for name in sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]), reverse=True):
        if complete(os.path.join(output_dir, name)):
            if skipped:
                logger.warning("skipping incomplete checkpoint(s) %s in %s (interrupted while being written); "
                               "resuming from %s", ", ".join(skipped), output_dir, name)
            return os.path.join(output_dir, name)
        skipped.append(name)
    if skipped:
        raise ValueError(f"no complete checkpoint in {output_dir}: {', '.join(skipped)} were interrupted while "
                         "being written; start without resume_from_checkpoint")
    return True
