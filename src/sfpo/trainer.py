"""The RL training loop: rollout → reward → group advantages → old log-probs at θ0 → update → validate → log.

The update is GRPO (``passes`` plain passes over the rollout batch) or SFPO through ``sfpo.core``; everything
else is shared, so the two differ only where the paper says they do. Runs are deterministic for a seed on CPU
(data order and sampling seeds derive from (seed, step)) and resume exactly from a checkpoint.
Generation engines, tasks and losses live in their own modules, batches in ``sfpo.batching`` and checkpoints in
``sfpo.checkpointing``; this file only wires them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from sfpo.batching import Batch, chunks, layout, padding_metrics
from sfpo.checkpointing import CheckpointError, Checkpoints, check_output_dir, load_weights, tensor_count
from sfpo.config import ConfigError, TrainConfig, to_dict
from sfpo.core import LossConfig, SlowFastUpdate, compute_advantages, loss_normalizer, make_switch, policy_loss
from sfpo.evaluate import evaluate
from sfpo.metrics import MetricsWriter
from sfpo.policy import add_lora, load_policy, nonfinite_params, sequence_logprobs, warn_if_slow_bf16
from sfpo.preemption import Preempted, PreemptionHandler
from sfpo.rewards import RewardError, score
from sfpo.runlock import RunLock
from sfpo.rollout import SamplingParams, make_engine

__all__ = ["Trainer", "RewardError", "NonFiniteError", "TrainingStalled", "CheckpointError", "Preempted"]

logger = logging.getLogger(__name__)


def _dropout_active(model: torch.nn.Module) -> bool:
    """Whether a training-mode forward samples dropout masks (a dropout module, or a config value > 0 named
    ``*dropout*`` or ``*pdrop`` as GPT-2's): then it is not the policy the old log-probs describe."""
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    values = config.to_dict() if hasattr(config, "to_dict") else {}
    return any(("dropout" in k or k.endswith("pdrop")) and isinstance(v, (int, float)) and v > 0
               for k, v in values.items())


class NonFiniteError(FloatingPointError):
    """A loss or gradient norm was NaN/inf, or an update exploded; the step is abandoned and θ0 restored."""


class TrainingStalled(RuntimeError):
    """``max_consecutive_skips`` steps in a row were skipped: the run makes no progress and stops."""


def load_examples(cfg: TrainConfig, task) -> tuple[list, list]:
    """The task's training and validation examples; missing, empty or unparseable data is one ConfigError naming
    the task (before a model is loaded)."""
    name = cfg.task.name
    try:
        train = task.examples("train")
        val = task.examples(cfg.eval.split, cfg.eval.num_prompts)
    except ValueError as e:  # empty or unparseable data, a missing column: the task names the file
        raise ConfigError(str(e) if str(e).startswith(name) else f"task {name!r}: {e}") from None
    if not train:
        raise ConfigError(f"task {name!r} has no training examples")
    return train, val


class Trainer:
    def __init__(self, cfg: TrainConfig, model=None, tokenizer=None, task=None) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        if task is None:
            from sfpo.tasks import get_task

            try:
                task = get_task(cfg.task.name, **cfg.task.kwargs)
            except (ValueError, TypeError) as e:  # unknown task name or option: a config problem
                raise ConfigError(f"task: {e}") from None
        self.task = task
        self.out = Path(cfg.output_dir)
        self.checkpoints = Checkpoints(self.out, cfg.keep_checkpoints)
        # what would otherwise fail late, or with a message pointing elsewhere, checked before a model loads
        check_output_dir(self.out)
        self.run_lock = RunLock.acquire(self.out)  # one run per folder, before anything in it is read or cleaned
        self.checkpoints.remove_partial()
        train_examples, val_examples = load_examples(cfg, task)
        if cfg.resume:
            self.checkpoints.check_resumable(to_dict(cfg))
        if model is None:
            model, tokenizer = load_policy(cfg.model, cfg.task.name, cfg.task.kwargs)
        model = add_lora(model, cfg.model)
        self.model, self.tokenizer = model, tokenizer
        self._setup_precision()
        warn_if_slow_bf16(model, cfg.model)
        self.device = next(model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        warm = o.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm > 0 else 1.0)
        a = cfg.algorithm
        sfpo = a.name == "sfpo"
        self.update = SlowFastUpdate(
            self.params, optimizer=self.optimizer, scheduler=self.scheduler, lr_stepping=a.lr_stepping,
            inner_steps=a.inner_steps if sfpo else a.passes - 1,
            alpha=a.alpha if sfpo else 1.0,  # GRPO with μ passes = μ-1 "fast" passes that are never pulled back
            optimizer_state=a.optimizer_state if sfpo else "carry",
            slow_pass=a.slow_pass or not sfpo, keep_anchor=cfg.nan_guard, track_drift=sfpo,
            kl_budget=a.kl_budget if sfpo and a.alpha_rule == "kl_budget" else None,
            outer_momentum=a.outer_momentum if sfpo else 0.0)
        self.switch = make_switch(a.switch if sfpo else "never", window=a.switch_window,
                                  threshold=a.switch_threshold, two_sided=a.switch_two_sided,
                                  stop_step=a.switch_stop_step)
        self.loss_cfg = LossConfig(clip_low=a.clip_low, clip_high=a.clip_high, ratio_level=a.ratio_level,
                                   aggregation=a.aggregation, max_length=cfg.rollout.max_new_tokens,
                                   kl_coef=a.kl_coef, entropy_coef=a.entropy_coef, clip_ratio_c=a.clip_ratio_c)
        self.ref_model = None
        if a.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.engine = make_engine(cfg.rollout.engine, model, tokenizer, **self._engine_kwargs())
        # the prompt-length policy needs the tokenizer
        self.train_examples = self._limit_prompts(train_examples, "train")
        self.val_examples = self._limit_prompts(val_examples, cfg.eval.split)
        if not self.train_examples:
            raise ConfigError(f"task {cfg.task.name!r}: every training prompt is longer than "
                              f"rollout.max_prompt_tokens={cfg.rollout.max_prompt_tokens}")
        self.step = 0
        self.rollouts = 0
        self.train_time = 0.0
        self.best = {"accuracy": -1.0, "step": -1, "rollouts": 0, "train_time": 0.0}
        self.nan_skips = 0
        self.consecutive_skips = 0
        self.preemption = PreemptionHandler()
        resumed = self._resume() if cfg.resume else None
        log = cfg.log
        self.writer = MetricsWriter(self.out, tensorboard=log.tensorboard, wandb=log.wandb,
                                    wandb_project=log.wandb_project, config=to_dict(cfg), resume_step=resumed)

    # ---------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs besides the weights: optimizer, scheduler, SFPO, switch, counters, RNGs."""
        return {"step": self.step, "rollouts": self.rollouts, "train_time": self.train_time, "best": self.best,
                "nan_skips": self.nan_skips, "consecutive_skips": self.consecutive_skips,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "update": self.update.state_dict(), "switch": self.switch.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "config": to_dict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._follow_config_lr(state["config"])
        self.update.load_state_dict(state["update"])
        self.switch.load_state_dict(state["switch"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step, self.rollouts, self.train_time = state["step"], state["rollouts"], state["train_time"]
        self.best, self.nan_skips = state["best"], state["nan_skips"]
        self.consecutive_skips = state.get("consecutive_skips", 0)  # absent from checkpoints of older versions

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint of the current step (HF model folder + trainer_state.pt)."""
        return self.checkpoints.save(self.step, self.model, self.tokenizer, self.state_dict())

    def _resume(self) -> int | None:
        found = self.checkpoints.load_latest(self.model, self.device)
        if found is None:
            return None
        path, state = found
        self.load_state_dict(state)
        logger.info("resumed from %s (step %d, %d rollouts)", path, self.step, self.rollouts)
        return self.step

    def _follow_config_lr(self, saved: dict[str, Any]) -> None:
        """Optimizer and scheduler state carry the checkpoint's LR; a resume with another optim.lr (as after a run
        stopped on exploding updates) continues with the configured one."""
        old, new = saved["optim"]["lr"], self.cfg.optim.lr
        if old == new:
            return
        logger.warning("optim.lr is %g, the checkpoint was trained with %g: continuing with %g", new, old, new)
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scheduler.base_lrs = [new] * len(self.optimizer.param_groups)
        for g in self.optimizer.param_groups:
            g["initial_lr"], g["lr"] = new, new * factor

    # ---------------------------------------------------------------------------------------- the loop
    def train(self) -> dict[str, Any]:
        """Run until ``steps`` (or the rollout budget); returns the run summary. SIGTERM or SIGINT stops it at the
        next step boundary with a checkpoint of the last completed step and raises ``Preempted``."""
        try:
            with self.preemption:
                return self._train()
        finally:
            self.run_lock.release()

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        bar = None
        if cfg.log.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.algorithm.name}", dynamic_ncols=True)
        try:
            if self.step == 0 and cfg.eval.every:
                self.writer.log(0, self._validate())
            while self.step < cfg.steps and not self._budget_spent():
                self._stop_if_preempted()
                metrics = self.train_step()
                self.step += 1
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or self.step == cfg.steps
                                       or self._budget_spent()):
                    metrics.update(self._validate())
                self.writer.log(self.step, metrics)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward']:.3f}", val=f"{self.best['accuracy']:.3f}")
            final = self.save_checkpoint()
            self._stop_if_preempted(saved=final)  # before the test set, which can take as long as many steps
            summary = self._summary()
            if cfg.eval.test_num_prompts:
                summary.update(self._test(final))
                summary.update(self._peak_memory())  # the test samples too: read the peak after it
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        finally:
            if bar is not None:
                bar.close()
            self.writer.close()
        if cfg.log.plot:
            from sfpo.plots import plot_run

            summary["plot"] = str(plot_run(self.out))
        return summary

    def train_step(self) -> dict[str, float]:
        """One training step on one fresh rollout batch."""
        cfg, r = self.cfg, self.cfg.rollout
        t_step = time.perf_counter()
        timings: dict[str, float] = {}
        examples = self._step_examples(self.step)

        t0 = time.perf_counter()
        self.engine.sync_weights(self.model)  # once per training step; the fast passes never touch the engine
        rollout = self.engine.generate(
            [ex.prompt for ex in examples],
            SamplingParams(n=r.group_size, temperature=r.temperature, top_p=r.top_p,
                           max_new_tokens=r.max_new_tokens, seed=self._seed("rollout", self.step)))
        timings["time/rollout"] = time.perf_counter() - t0
        self.rollouts += len(rollout.texts)

        t0 = time.perf_counter()
        rewards = torch.tensor(score(self.task, rollout.texts, examples, r.group_size, cfg.task.reward_errors),
                               dtype=torch.float32)
        if cfg.task.reward_noise > 0:
            g = torch.Generator().manual_seed(self._seed("noise", self.step))
            flip = torch.rand(rewards.shape, generator=g) < cfg.task.reward_noise
            rewards = torch.where(flip, 1.0 - rewards, rewards)
        advantages = compute_advantages(cfg.algorithm.advantage, rewards, r.group_size)
        timings["time/reward"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        batch = self._make_batch(rollout, advantages.to(self.device))
        timings["time/old_logprobs"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        active = self.switch.active
        pass_metrics: list[dict[str, float]] = []
        fill_old = self._old_from_first_pass()  # then the first pass's forward writes batch.old_logprobs
        try:
            upd = self.update.step(
                lambda: self._guarded(self._one_pass(batch, pass_metrics, fill_old=fill_old and not pass_metrics)),
                active=active, measure_kl=functools.partial(self._batch_kl, batch))
        except NonFiniteError as e:
            restored = self.update.abort()
            self.nan_skips += 1
            logger.warning("step %d skipped: %s; weights %s θ0", self.step + 1, e,
                           "restored to" if restored else "could NOT be restored to (nan_guard is off)")
            upd = {"nan_skip": 1.0}
            self._count_skip(e)
        else:
            self.consecutive_skips = 0
        timings["time/update"] = time.perf_counter() - t0
        last = pass_metrics[-1] if pass_metrics else {}
        self.switch.update(self.step, last.get("entropy"))
        timings["time/step"] = time.perf_counter() - t_step
        self.train_time += timings["time/step"]

        metrics: dict[str, float] = {
            "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
            "accuracy": float((rewards >= 1.0).float().mean()),
            "completion_length": float(rollout.completion_mask.sum(-1).float().mean()),
            "truncated_ratio": float(rollout.truncated.float().mean()),
            "frac_zero_std_groups": float((rewards.view(-1, r.group_size).std(-1) == 0).float().mean()),
            "rollouts": float(self.rollouts), "time/train_elapsed": self.train_time,
            "lr": self.optimizer.param_groups[0]["lr"], "nan_skips": float(self.nan_skips),
            **{k: v for k, v in last.items()}, **timings, **padding_metrics(self._layout(batch)),
            **self._prompt_cut_metrics(examples),
        }
        if cfg.algorithm.name == "sfpo":
            metrics.update({k: v for k, v in upd.items()})
            metrics.update(self.switch.metrics())
        else:
            metrics.update({k: v for k, v in upd.items() if k.startswith("time/") or k == "nan_skip"})
        return metrics

    # --------------------------------------------------------------------------------------- pieces
    def _seed(self, purpose: str, step: int) -> int:
        offset = {"rollout": 0, "data": 1, "eval": 2, "test": 3, "noise": 4}[purpose]
        return (self.cfg.seed * 1_000_003 + step * 10 + offset) % (2**62)

    def _step_examples(self, step: int) -> list:
        """The prompts of training step ``step``: epochs of seeded permutations, derived from (seed, step)."""
        n, pool = self.cfg.rollout.num_prompts, len(self.train_examples)
        out = []
        for i in range(step * n, (step + 1) * n):
            epoch, pos = divmod(i, pool)
            out.append(self.train_examples[self._epoch_order(epoch)[pos]])
        return out

    @functools.lru_cache(maxsize=2)
    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self._seed("data", epoch))
        return torch.randperm(len(self.train_examples), generator=g).tolist()

    @torch.no_grad()
    def _make_batch(self, rollout, advantages: torch.Tensor) -> Batch:
        r = self.cfg.rollout
        ids, pmask = rollout.prompt_ids.to(self.device), rollout.prompt_mask.to(self.device)
        cids, cmask = rollout.completion_ids.to(self.device), rollout.completion_mask.to(self.device)
        mb = self.cfg.optim.micro_batch_size or len(cids)

        def logprobs_of(model) -> torch.Tensor:
            was = model.training
            model.eval()
            rows = Batch(ids, pmask, cids, cmask, advantages, old_logprobs=cmask, ref_logprobs=None)  # no old yet
            if self.cfg.optim.micro_batch_tokens:  # the training passes' micro-batches: ratios exactly 1 at θ0
                out = self._bucketed_logprobs(model, rows)
            else:
                out = torch.cat([self._logprobs(model, rows.rows(s), with_entropy=False)[0]
                                 for s in chunks(len(cids), size=mb)])
            model.train(was)
            return out

        if r.old_logprobs == "sampling":
            old = rollout.sampling_logprobs.to(self.device)
        elif self._old_from_first_pass():
            old = torch.zeros(cids.shape, dtype=torch.float32, device=self.device)  # written by the first pass
        else:
            old = logprobs_of(self.model)
        ref = logprobs_of(self.ref_model) if self.ref_model is not None else None
        return Batch(ids, pmask, cids, cmask, advantages, old, ref)

    @torch.no_grad()
    def _batch_kl(self, batch: Batch) -> float:
        """KL(π_θ0 ‖ π_θ) per response token on the batch at the current weights (trust-region SFPO's
        measurement): the k3 estimator exp(d) − 1 − d, d = log π_θ − log π_θ0, on tokens sampled from π_θ0 —
        unbiased and never negative (the estimator of the KL penalty in ``sfpo.core.losses``)."""
        was = self.model.training
        self.model.eval()
        total, tokens = 0.0, 0.0
        for s in chunks(len(batch), size=self.cfg.optim.micro_batch_size or len(batch)):
            m = batch.rows(s).trimmed()
            logp, _ = self._logprobs(self.model, m, with_entropy=False)  # as the old log-probs were: KL 0 at θ0
            d = (logp - m.old_logprobs) * m.completion_mask
            total += float(((torch.exp(d) - 1 - d) * m.completion_mask).sum())
            tokens += float(m.completion_mask.sum())
        self.model.train(was)
        return total / max(tokens, 1.0)

    def _old_from_first_pass(self) -> bool:
        """Whether the first pass's own forward gives the old log-probs exactly, saving a forward over the batch (as
        TRL's GRPO with one iteration): the pass starts at θ0 and is one optimizer step, so every micro-batch of it
        runs at θ0, and a training-mode forward is the θ0 policy (no dropout). Not with ``old_logprobs=sampling``."""
        return (self.cfg.rollout.old_logprobs == "recompute" and self.cfg.optim.mini_batches == 1
                and not _dropout_active(self.model))

    def _one_pass(self, batch: Batch, log: list[dict[str, float]], fill_old: bool = False) -> dict[str, float]:
        """One pass of the base update: an optimizer step per mini-batch, micro-batched gradient accumulation.
        ``fill_old``: this pass runs at θ0 (see ``_old_from_first_pass``); its log-probs, detached, are the old
        log-probs, written into ``batch`` for the passes after it (ratios exactly 1 here)."""
        o = self.cfg.optim
        sums: dict[str, float] = {}
        n_mb = 0
        for ms, mini, micro in self._layout(batch):
            norm = loss_normalizer(self.loss_cfg.aggregation, mini.completion_mask)
            self.optimizer.zero_grad(set_to_none=True)
            loss_total = 0.0
            micro_metrics: dict[str, float] = {}
            for rows in micro:
                m = mini.rows(rows).trimmed()
                logp, ent = self._logprobs(self.model, m)
                if fill_old:
                    m = dataclasses.replace(m, old_logprobs=logp.detach())
                    batch.old_logprobs[self._row_index(ms, rows), :logp.shape[1]] = m.old_logprobs
                loss, metrics = policy_loss(logp, m.old_logprobs, m.advantages, m.completion_mask, self.loss_cfg,
                                            ref_logprobs=m.ref_logprobs, entropy=ent, normalizer=norm)
                loss.backward()
                loss_total += float(loss.detach())
                w = float(m.completion_mask.sum()) / max(float(mini.completion_mask.sum()), 1.0)
                for k, v in metrics.items():
                    micro_metrics[k] = micro_metrics.get(k, 0.0) + w * v
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, o.grad_clip if o.grad_clip > 0 else math.inf)
            if not (math.isfinite(loss_total) and math.isfinite(float(grad_norm))):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteError(f"loss={loss_total}, grad_norm={float(grad_norm)}")
            self.optimizer.step()
            n_mb += 1
            for k, v in {"loss": loss_total, "grad_norm": float(grad_norm), **micro_metrics}.items():
                sums[k] = sums.get(k, 0.0) + v
        result = {k: v / max(n_mb, 1) for k, v in sums.items()}
        log.append(result)
        return result

    # --------------------------------------------------------------------- precision, batching, prompt limits
    def _setup_precision(self) -> None:
        """bf16 autocast over fp32 weights (the optimizer, its state and the SFPO anchor see only those), and
        activation checkpointing of the decoder layers in training mode."""
        m = self.cfg.model
        self._autocast_dtype = torch.bfloat16 if m.mixed_precision == "bf16" else None
        trained = [p for p in self.model.parameters() if p.requires_grad]
        if self._autocast_dtype is not None and any(p.dtype != torch.float32 for p in trained):
            raise ConfigError("model.mixed_precision=bf16 keeps float32 master weights: set model.dtype=float32 "
                              "(bf16 weights would round lr-1e-6 steps away)")
        if m.gradient_checkpointing:
            # non-reentrant: works when the inputs need no grad (frozen embeddings under LoRA) and with autocast.
            # transformers 5.2x renamed the method (the old name warns); older 5.x has only the old one.
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _logprobs(self, model, m: Batch, with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs and entropies (B, T) of ``m``'s responses under ``model``, as every pass and measurement of the
        trainer computes them: in the configured precision, through the chunked head (``model.head_chunk_tokens``)."""
        with self._autocast():
            return sequence_logprobs(model, m.prompt_ids, m.prompt_mask, m.completion_ids, m.completion_mask,
                                     self.cfg.rollout.temperature, with_entropy,
                                     chunk_size=self.cfg.model.head_chunk_tokens)

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _engine_kwargs(self) -> dict[str, Any]:
        r = self.cfg.rollout
        kwargs = dict(r.engine_kwargs)
        if r.max_prompt_tokens and r.long_prompts == "cut":
            if r.engine != "hf":
                raise ConfigError("rollout.long_prompts=cut needs the hf engine; use long_prompts=skip with vllm")
            kwargs["max_prompt_tokens"] = r.max_prompt_tokens
        if r.engine == "hf" and self._autocast_dtype is not None:
            kwargs.setdefault("autocast_dtype", "bfloat16")  # sample in the precision the old log-probs use
        return kwargs

    def _prompt_tokens(self, examples: list) -> list[int]:
        return [len(self.tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]) for ex in examples]

    def _limit_prompts(self, examples: list, split: str) -> list:
        """Drop prompts over ``rollout.max_prompt_tokens`` once, when ``long_prompts`` is "skip"; logged."""
        r = self.cfg.rollout
        if not r.max_prompt_tokens or r.long_prompts != "skip":
            return examples
        kept = [ex for ex, n in zip(examples, self._prompt_tokens(examples)) if n <= r.max_prompt_tokens]
        if len(kept) < len(examples):
            logger.warning("%d of %d %s prompts are longer than rollout.max_prompt_tokens=%d tokens: skipped",
                           len(examples) - len(kept), len(examples), split, r.max_prompt_tokens)
        return kept

    def _prompt_cut_metrics(self, examples: list) -> dict[str, float]:
        r = self.cfg.rollout
        if not r.max_prompt_tokens or r.long_prompts != "cut":
            return {}
        return {"prompts_cut": float(sum(n > r.max_prompt_tokens for n in self._prompt_tokens(examples)))}

    def _layout(self, batch: Batch) -> list:
        o = self.cfg.optim
        return layout(batch, o.mini_batches, o.micro_batch_size, o.micro_batch_tokens)

    def _bucketed_logprobs(self, model, batch: Batch) -> torch.Tensor:
        """Log-probs (N, T) computed on exactly the micro-batches the training passes will use."""
        out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32, device=self.device)
        for ms, mini, micro in self._layout(batch):
            for rows in micro:
                m = mini.rows(rows).trimmed()
                logp = self._logprobs(model, m, with_entropy=False)[0]
                out[self._row_index(ms, rows), :logp.shape[1]] = logp
        return out

    def _row_index(self, ms: slice, rows) -> torch.Tensor:
        """Batch rows of micro-batch ``rows`` (a slice or index tensor into mini-batch ``ms``)."""
        return torch.arange(ms.start, ms.stop, device=self.device)[rows.to(self.device) if torch.is_tensor(rows)
                                                                   else rows]

    def _budget_spent(self) -> bool:
        return bool(self.cfg.max_rollouts) and self.rollouts >= self.cfg.max_rollouts

    # ---------------------------------------------------------------------------------------- guards
    def _guarded(self, result: dict[str, float]) -> dict[str, float]:
        """A pass's result, once the weights it left are finite and within ``max_update_ratio`` of θ0; otherwise
        the step is abandoned as for a NaN loss, before anything can be saved from it."""
        if not self.cfg.nan_guard:
            return result
        moved, size = self.update.distance_from_anchor()
        ratio = self.cfg.max_update_ratio
        if not math.isfinite(moved):
            bad = nonfinite_params(self.model)
            raise NonFiniteError(f"the update made NaN/inf weights in {tensor_count(bad)} (first {bad[0]!r})" if bad else
                                 "the update exploded: ‖θ − θ0‖ overflows float32")
        if ratio > 0 and size > 0 and moved > ratio * size:
            raise NonFiniteError(f"the update exploded: ‖θ − θ0‖ = {moved:.3g} is {moved / size:.3g} × ‖θ0‖ "
                                 f"(max_update_ratio = {ratio:g})")
        return result

    def _stop_if_preempted(self, saved: Path | None = None) -> None:
        """At a step boundary after SIGTERM/SIGINT: checkpoint the last completed step (unless just saved) and stop."""
        if self.preemption.received is None:
            return
        if saved is None and self.step > 0:
            ckpts = self.checkpoints.complete()
            saved = ckpts[-1] if ckpts and ckpts[-1].name == f"step_{self.step:06d}" else self.save_checkpoint()
        raise Preempted(self.preemption.received, self.step, saved)

    def _count_skip(self, why: Exception) -> None:
        """Stop, with summary.json saying why, once ``max_consecutive_skips`` steps in a row were skipped."""
        self.consecutive_skips += 1
        limit = self.cfg.max_consecutive_skips
        if not limit or self.consecutive_skips < limit:
            return
        first = self.step - self.consecutive_skips + 2  # steps count from 1, as in metrics.jsonl
        msg = (f"training stopped: {self.consecutive_skips} steps in a row were skipped (steps {first}-{self.step + 1}), "
               f"the last because {why}. The run makes no progress: lower optim.lr if updates explode, check the "
               f"rewards if the loss is NaN. The weights are those from before step {first} "
               "(max_consecutive_skips=0 never stops)")
        (self.out / "summary.json").write_text(json.dumps({**self._summary(), "stopped": msg}, indent=2))
        raise TrainingStalled(msg)

    # ----------------------------------------------------------------------------------- validation
    def _validate(self) -> dict[str, float]:
        e, r = self.cfg.eval, self.cfg.rollout
        t0 = time.perf_counter()
        self.engine.sync_weights(self.model)
        res = evaluate(self.engine, self.task, self.val_examples, k=e.k, temperature=e.temperature, top_p=e.top_p,
                       max_new_tokens=r.max_new_tokens, seed=self._seed("eval", 0),
                       on_error=self.cfg.task.reward_errors)
        metrics = res.metrics("val")
        if res.avg_at_k > self.best["accuracy"]:
            self.best = {"accuracy": res.avg_at_k, "step": self.step, "rollouts": self.rollouts,
                         "train_time": self.train_time}
            self.checkpoints.save_model(self.out / "best", self.model, self.tokenizer)
        metrics["time/eval"] = time.perf_counter() - t0
        metrics["val/best_accuracy"] = self.best["accuracy"]
        return metrics

    def _test(self, final: Path) -> dict[str, float]:
        """Score the best-on-validation and the final policy on held-out test prompts. The final weights come back
        from their checkpoint ``final`` rather than from a copy kept in memory (a full extra copy of the model)."""
        e, r = self.cfg.eval, self.cfg.rollout
        examples = self.task.examples("test", e.test_num_prompts)
        kw = dict(k=e.k, temperature=e.temperature, top_p=e.top_p, max_new_tokens=r.max_new_tokens,
                  seed=self._seed("test", 0))
        self.engine.sync_weights(self.model)
        out = {"test/final_accuracy": evaluate(self.engine, self.task, examples, **kw).avg_at_k}
        best_dir = self.out / "best"
        if best_dir.exists():
            load_weights(self.model, best_dir, self.device)
            self.engine.sync_weights(self.model)
            out["test/best_accuracy"] = evaluate(self.engine, self.task, examples, **kw).avg_at_k
            load_weights(self.model, final, self.device)
            self.engine.sync_weights(self.model)
        return out

    def _peak_memory(self) -> dict[str, float]:
        import resource  # peak memory of this process; runs meant for comparison run in their own process

        peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if self.device.type == "cuda":
            peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return peak

    def _summary(self) -> dict[str, Any]:
        peak = self._peak_memory()
        return {"steps": self.step, "rollouts": self.rollouts, "train_time": self.train_time,
                "best_accuracy": self.best["accuracy"], "best_step": self.best["step"],
                "best_rollouts": self.best["rollouts"], "best_train_time": self.best["train_time"],
                "nan_skips": self.nan_skips, "switched_off_at": self.switch.switched_at,
                "update_extra_mb": self._update_extra_bytes() / 2**20, **peak, "output_dir": str(self.out)}

    def _update_extra_bytes(self) -> int:
        """What the update keeps alive. The anchor is allocated at the first step, so a run resumed at its last
        step (no step taken) counts it as the uninterrupted run does."""
        u = self.update
        if u.extra_bytes() == 0 and (u.keep_anchor or u.runs_stage_one):
            return sum(p.numel() * p.element_size() for p in u.params)
        return u.extra_bytes()
