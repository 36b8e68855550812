"""The RL training loop: rollout → reward → group advantages → old log-probs at θ0 → update → validate → log.

The update is GRPO (``passes`` plain passes over the rollout batch) or SFPO through ``sfpo.core``; everything
else is shared, so the two differ only where the paper says they do. Runs are deterministic for a seed on CPU
(data order and sampling seeds derive from (seed, step)) and resume exactly from a checkpoint.
Generation engines, tasks and losses live in their own modules; this file only wires them.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sfpo.config import ConfigError, TrainConfig, to_dict
from sfpo.core import LossConfig, SlowFastUpdate, compute_advantages, loss_normalizer, make_switch, policy_loss
from sfpo.evaluate import RewardError, evaluate, score
from sfpo.metrics import MetricsWriter
from sfpo.policy import add_lora, load_policy, sequence_logprobs
from sfpo.rollout import SamplingParams, make_engine

__all__ = ["Trainer", "RewardError", "NonFiniteError"]

logger = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """A loss or gradient norm was NaN/inf; the step is abandoned and θ0 restored."""


@dataclass
class Batch:
    """One rollout batch as the update sees it. N = prompts × group_size responses."""

    prompt_ids: torch.Tensor  # (N, P)
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, T)
    completion_mask: torch.Tensor  # (N, T)
    advantages: torch.Tensor  # (N,)
    old_logprobs: torch.Tensor  # (N, T) at θ0
    ref_logprobs: torch.Tensor | None  # (N, T) reference policy, only with kl_coef > 0

    def rows(self, idx: slice) -> "Batch":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Batch(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def trimmed(self) -> "Batch":
        """Drop padding columns no row of this (micro-)batch uses: a batch is padded to the step's longest prompt
        and response, and short micro-batches should not pay for them. Masked math is unchanged."""
        p0 = int(self.prompt_mask.any(0).long().argmax())  # first prompt column any row uses (left padding)
        t1 = max(int(self.completion_mask.sum(-1).max()), 1)  # last response column any row uses
        return Batch(self.prompt_ids[:, p0:], self.prompt_mask[:, p0:], self.completion_ids[:, :t1],
                     self.completion_mask[:, :t1], self.advantages, self.old_logprobs[:, :t1],
                     None if self.ref_logprobs is None else self.ref_logprobs[:, :t1])


def _chunks(n: int, parts: int | None = None, size: int | None = None) -> list[slice]:
    if size:
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


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
        if model is None:
            model, tokenizer = load_policy(cfg.model, cfg.task.name, cfg.task.kwargs)
        model = add_lora(model, cfg.model)
        self.model, self.tokenizer = model, tokenizer
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
            kl_budget=a.kl_budget if sfpo and a.alpha_rule == "kl_budget" else None)
        self.switch = make_switch(a.switch if sfpo else "never", window=a.switch_window,
                                  threshold=a.switch_threshold, two_sided=a.switch_two_sided,
                                  stop_step=a.switch_stop_step)
        self.loss_cfg = LossConfig(clip_low=a.clip_low, clip_high=a.clip_high, ratio_level=a.ratio_level,
                                   aggregation=a.aggregation, max_length=cfg.rollout.max_new_tokens,
                                   kl_coef=a.kl_coef, entropy_coef=a.entropy_coef)
        self.ref_model = None
        if a.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.engine = make_engine(cfg.rollout.engine, model, tokenizer, **cfg.rollout.engine_kwargs)
        self.train_examples = self.task.examples("train")
        self.val_examples = self.task.examples(cfg.eval.split, cfg.eval.num_prompts)
        if not self.train_examples:
            raise ValueError(f"task {cfg.task.name!r} has no training examples")
        self.out = Path(cfg.output_dir)
        self.step = 0
        self.rollouts = 0
        self.train_time = 0.0
        self.best = {"accuracy": -1.0, "step": -1, "rollouts": 0, "train_time": 0.0}
        self.nan_skips = 0
        resumed = self._maybe_resume() if cfg.resume else None
        log = cfg.log
        self.writer = MetricsWriter(self.out, tensorboard=log.tensorboard, wandb=log.wandb,
                                    wandb_project=log.wandb_project, config=to_dict(cfg), resume_step=resumed)

    # ---------------------------------------------------------------------------------------- the loop
    def train(self) -> dict[str, Any]:
        """Run until ``steps`` (or the rollout budget); returns the run summary."""
        cfg = self.cfg
        bar = None
        if cfg.log.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.algorithm.name}", dynamic_ncols=True)
        try:
            if self.step == 0 and cfg.eval.every:
                self.writer.log(0, self._validate())
            while self.step < cfg.steps and not self._budget_spent():
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
            self.save_checkpoint()
            summary = self._summary()
            if cfg.eval.test_num_prompts:
                summary.update(self._test())
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
        try:
            upd = self.update.step(lambda: self._one_pass(batch, pass_metrics), active=active,
                                   measure_kl=functools.partial(self._batch_kl, batch))
        except NonFiniteError as e:
            restored = self.update.abort()
            self.nan_skips += 1
            logger.warning("step %d skipped: %s; weights %s θ0", self.step, e,
                           "restored to" if restored else "could NOT be restored to (nan_guard is off)")
            upd = {"nan_skip": 1.0}
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
            **{k: v for k, v in last.items()}, **timings,
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
            parts = [sequence_logprobs(model, ids[s], pmask[s], cids[s], cmask[s], r.temperature, False)[0]
                     for s in _chunks(len(cids), size=mb)]
            model.train(was)
            return torch.cat(parts)

        old = rollout.sampling_logprobs.to(self.device) if r.old_logprobs == "sampling" else logprobs_of(self.model)
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
        for s in _chunks(len(batch), size=self.cfg.optim.micro_batch_size or len(batch)):
            m = batch.rows(s).trimmed()
            logp, _ = sequence_logprobs(self.model, m.prompt_ids, m.prompt_mask, m.completion_ids,
                                        m.completion_mask, self.cfg.rollout.temperature, False)
            d = (logp - m.old_logprobs) * m.completion_mask
            total += float(((torch.exp(d) - 1 - d) * m.completion_mask).sum())
            tokens += float(m.completion_mask.sum())
        self.model.train(was)
        return total / max(tokens, 1.0)

    def _one_pass(self, batch: Batch, log: list[dict[str, float]]) -> dict[str, float]:
        """One pass of the base update: an optimizer step per mini-batch, micro-batched gradient accumulation."""
        o = self.cfg.optim
        sums: dict[str, float] = {}
        n_mb = 0
        for mb in _chunks(len(batch), parts=o.mini_batches):
            mini = batch.rows(mb)
            norm = loss_normalizer(self.loss_cfg.aggregation, mini.completion_mask)
            self.optimizer.zero_grad(set_to_none=True)
            loss_total = 0.0
            micro_metrics: dict[str, float] = {}
            for ms in _chunks(len(mini), size=o.micro_batch_size or len(mini)):
                m = mini.rows(ms).trimmed()
                logp, ent = sequence_logprobs(self.model, m.prompt_ids, m.prompt_mask, m.completion_ids,
                                              m.completion_mask, self.cfg.rollout.temperature)
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

    def _budget_spent(self) -> bool:
        return bool(self.cfg.max_rollouts) and self.rollouts >= self.cfg.max_rollouts

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
            self._save_model(self.out / "best")
        metrics["time/eval"] = time.perf_counter() - t0
        metrics["val/best_accuracy"] = self.best["accuracy"]
        return metrics

    def _test(self) -> dict[str, float]:
        """Score the best-on-validation and the final policy on held-out test prompts."""
        e, r = self.cfg.eval, self.cfg.rollout
        examples = self.task.examples("test", e.test_num_prompts)
        kw = dict(k=e.k, temperature=e.temperature, top_p=e.top_p, max_new_tokens=r.max_new_tokens,
                  seed=self._seed("test", 0))
        self.engine.sync_weights(self.model)
        out = {"test/final_accuracy": evaluate(self.engine, self.task, examples, **kw).avg_at_k}
        best_dir = self.out / "best"
        if best_dir.exists():
            live = copy.deepcopy(self.model.state_dict())
            self._load_model_weights(best_dir)
            self.engine.sync_weights(self.model)
            out["test/best_accuracy"] = evaluate(self.engine, self.task, examples, **kw).avg_at_k
            self.model.load_state_dict(live)
            self.engine.sync_weights(self.model)
        return out

    def _summary(self) -> dict[str, Any]:
        import resource  # peak memory of this process; runs meant for comparison run in their own process

        peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if self.device.type == "cuda":
            peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return {"steps": self.step, "rollouts": self.rollouts, "train_time": self.train_time,
                "best_accuracy": self.best["accuracy"], "best_step": self.best["step"],
                "best_rollouts": self.best["rollouts"], "best_train_time": self.best["train_time"],
                "nan_skips": self.nan_skips, "switched_off_at": self.switch.switched_at,
                "update_extra_mb": self.update.extra_bytes() / 2**20, **peak, "output_dir": str(self.out)}

    # ---------------------------------------------------------------------------------- checkpoints
    def _save_model(self, path: Path) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a shard bar per save would drown the training progress bar
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)

    def _load_model_weights(self, path: Path) -> None:
        from safetensors.torch import load_file

        if (path / "adapter_model.safetensors").exists():  # a PEFT checkpoint holds the adapters only
            from peft import set_peft_model_state_dict

            state = load_file(str(path / "adapter_model.safetensors"), device=str(self.device))
            unexpected = set_peft_model_state_dict(self.model, state).unexpected_keys
            if unexpected:
                raise RuntimeError(f"adapter checkpoint {path} does not match the model: unexpected={unexpected}")
            return
        state = {}
        for f in sorted(path.glob("*.safetensors")):
            state.update(load_file(str(f), device=str(self.device)))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied lm_head is not saved
            raise RuntimeError(f"checkpoint {path} does not match the model: missing={missing}, "
                               f"unexpected={unexpected}")

    def save_checkpoint(self) -> Path:
        """A resumable checkpoint: HF model folder + trainer_state.pt (optimizer, scheduler, SFPO, counters)."""
        root = self.out / "checkpoints"
        path = root / f"step_{self.step:06d}"
        self._save_model(path)
        state = {
            "step": self.step, "rollouts": self.rollouts, "train_time": self.train_time, "best": self.best,
            "nan_skips": self.nan_skips, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "update": self.update.state_dict(),
            "switch": self.switch.state_dict(), "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(), "config": to_dict(self.cfg),
        }
        torch.save(state, path / "trainer_state.tmp")
        (path / "trainer_state.tmp").rename(path / "trainer_state.pt")
        for old in sorted(root.glob("step_*"))[:-max(self.cfg.keep_checkpoints, 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def _maybe_resume(self) -> int | None:
        ckpts = sorted(p for p in (self.out / "checkpoints").glob("step_*") if (p / "trainer_state.pt").exists())
        if not ckpts:
            return None
        path = ckpts[-1]
        state = torch.load(path / "trainer_state.pt", map_location=self.device, weights_only=False)
        self._load_model_weights(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.update.load_state_dict(state["update"])
        self.switch.load_state_dict(state["switch"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step, self.rollouts, self.train_time = state["step"], state["rollouts"], state["train_time"]
        self.best, self.nan_skips = state["best"], state["nan_skips"]
        logger.info("resumed from %s (step %d, %d rollouts)", path, self.step, self.rollouts)
        return self.step
