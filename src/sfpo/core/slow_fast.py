"""The SFPO update (Wang et al., arXiv 2510.04072, Algorithm 1): snapshot θ0 → K fast passes → reposition →
one slow pass, all on the same rollout batch.

It is optimizer- and framework-agnostic: "one pass of the base update on this batch" (GRPO, DAPO, ... over all
mini-batches, optimizer steps included) is a callable the caller owns. This module only decides *where* that
pass starts. It keeps exactly one extra copy of the trainable parameters (the anchor θ0, optionally on another
device), repositions in place, and never touches frozen parameters. It does not generate, score or compute
losses.

With SGD of step η the whole step reads (the paper's unified form)

    θ^{s+1} = θ^{s,0} − η [ α Σ_{k<K} ∇L(θ^{s,k}) + ∇L(θ̃) ],   θ̃ = θ^{s,0} + α (θ^{s,K} − θ^{s,0}).

The same step in a few lines, without what a real run needs beside it: ``sfpo.core.reference.sfpo_step``.

Two ways to drive it:
- ``update.step(base_pass)`` runs a whole training step;
- ``begin(active)`` / ``record_pass(loss)`` / ``end()`` let a framework whose loop owns the passes (TRL) report
  each pass as it finishes; the reposition happens inside ``record_pass`` after the K-th fast pass.
  ``state_dict`` taken between any two calls resumes the cycle exactly (the anchor travels with it).

Trust-region SFPO (our variant, not the paper's): with ``kl_budget`` set, α is chosen per step so that the
repositioned policy stays within that divergence of θ0's on the batch. The caller passes ``measure_kl`` (its
policy's divergence from θ0's on the batch at the current weights; the caller owns the forward) and α is the
largest value ≤ ``alpha`` that the measurement at θ̃ accepts (see ``_trust_region``).

Outer Nesterov momentum (our variant, issue 24; Lookahead + Nesterov as in DiLoCo's outer optimizer and SNOO): with
``outer_momentum`` μ > 0 the reposition is one Nesterov step on the fast trajectory's displacement, remembered
across training steps (see ``_nesterov_reposition``). μ = 0 is the paper's reposition, bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Literal, Mapping

import torch

from sfpo.core.anchor import Anchor, norm_of
from sfpo.core.params import LR_STEPPING, OPTIMIZER_STATE_POLICIES, SFPOParams

__all__ = ["SlowFastUpdate", "OPTIMIZER_STATE_POLICIES", "LR_STEPPING"]

logger = logging.getLogger(__name__)

Phase = Literal["idle", "fast", "slow", "done"]


def _pass_loss(result: Any) -> float:
    """A pass may return a loss (tensor or float), a metrics dict holding "loss", or None."""
    if isinstance(result, Mapping):
        result = result.get("loss")
    if result is None:
        return math.nan
    return float(result.detach()) if isinstance(result, torch.Tensor) else float(result)


class SlowFastUpdate:
    """Slow-Fast Policy Optimization around any base update.

    Args:
        params: the parameters the optimizer updates; those with ``requires_grad=False`` are ignored (never
            copied, never repositioned). With PEFT/LoRA pass the model and only adapters are trainable.
        inner_steps: K, the number of fast passes over the batch (Stage I). 0 makes every step a plain pass.
        alpha: α, the reposition coefficient θ̃ = θ0 + α(θK − θ0) (Stage II). 0 skips Stage I entirely, as
            Algorithm 1 does, so the step is exactly one plain pass; 1 keeps θK (K+1 plain passes).
        optimizer: needed for ``optimizer_state`` other than "carry" and for LR stepping.
        optimizer_state: what the optimizer state does at the reposition. "carry" (official code): moments
            and step counts run on untouched. "reset": forget the state of the trainable parameters, as a fresh
            optimizer. "restore": put back the state saved at θ0, so the slow pass starts from the optimizer
            state the step started with (costs one copy of that state).
        scheduler: an LR scheduler stepped by this object, per ``lr_stepping``; None if the caller steps it.
        lr_stepping: "train_step" (official): once per training step, after the slow pass; "optimizer_step":
            after every optimizer step (through an optimizer step hook), fast passes included.
        anchor_device: where θ0 lives; "cpu" offloads it from an accelerator (pinned when possible).
        track_drift: compute ``sfpo/drift_norm`` (‖θK − θ0‖); costs a read of both copies per step.
        slow_pass: run Stage III. False is the paper's "no slow correction" ablation: the step ends at θ̃.
        keep_anchor: take the anchor on plain steps too (switched off, α=0, K=0), so that ``abort()`` can put
            the weights back to θ0 on every step (a NaN guard); the anchor buffer exists anyway for SFPO.
        kl_budget: trust-region SFPO: choose α ≤ ``alpha`` per step so that ``measure_kl()`` at θ̃ is at most
            this; None (default) keeps α fixed. ``math.inf`` measures but never shrinks α (plain SFPO's bits).
        outer_momentum: μ, Nesterov momentum on the displacement θK − θ0 across training steps (0: off, the
            paper's reposition bit for bit). Costs one more copy of the trainable parameters (beside the anchor,
            on ``anchor_device``), kept across steps and checkpointed with the rest of the state.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | torch.nn.Module,
        *,
        inner_steps: int = 3,
        alpha: float = 0.8,
        optimizer: torch.optim.Optimizer | None = None,
        optimizer_state: str = "carry",
        scheduler: Any | None = None,
        lr_stepping: str = "train_step",
        anchor_device: str | torch.device | None = None,
        track_drift: bool = True,
        slow_pass: bool = True,
        keep_anchor: bool = False,
        kl_budget: float | None = None,
        outer_momentum: float = 0.0,
    ) -> None:
        if isinstance(params, torch.nn.Module):
            params = params.parameters()
        self.params: list[torch.Tensor] = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("SlowFastUpdate got no trainable parameters (all have requires_grad=False)")
        # the rules on these values are SFPOParams's (one definition for every front door); raises ValueError
        SFPOParams(inner_steps=inner_steps, alpha=alpha, optimizer_state=optimizer_state, lr_stepping=lr_stepping,
                   outer_momentum=outer_momentum, slow_pass=slow_pass, switch="never",
                   alpha_rule="fixed" if kl_budget is None else "kl_budget",
                   **({} if kl_budget is None else {"kl_budget": kl_budget}))
        if optimizer is None and (optimizer_state != "carry" or scheduler is not None):
            raise ValueError(f"optimizer_state={optimizer_state!r} or a scheduler needs the optimizer")
        self.inner_steps = inner_steps
        self.alpha = alpha
        self.optimizer = optimizer
        self.optimizer_state = optimizer_state
        self.scheduler = scheduler
        self.lr_stepping = lr_stepping
        self.anchor_device = torch.device(anchor_device) if anchor_device is not None else None
        self.anchor = Anchor(self.params, self.anchor_device)  # θ0, shared with the NaN guard (abort, distance)
        self.track_drift = track_drift
        self.slow_pass = slow_pass
        self.keep_anchor = keep_anchor
        self.kl_budget = kl_budget
        self.outer_momentum = outer_momentum
        self._momentum: list[torch.Tensor] | None = None  # m, the outer momentum buffer (μ > 0 only)
        self._measure_kl: Callable[[], float] | None = None
        self._saved_opt_state: dict[int, dict[str, Any]] | None = None
        self._reset()
        if scheduler is not None and lr_stepping == "optimizer_step":
            optimizer.register_step_post_hook(lambda *_: scheduler.step())

    # ------------------------------------------------------------------------------------------- lifecycle
    def _reset(self) -> None:
        self.phase: Phase = "idle"
        self.fast_done = 0
        self.metrics: dict[str, float] = {}
        self.anchor.valid = False
        self._momentum_stepped = False  # m took this step's displacement (an abort must not keep it)
        self._measure_kl = None

    @property
    def runs_stage_one(self) -> bool:
        return self.inner_steps > 0 and self.alpha > 0.0

    def begin(self, active: bool = True, measure_kl: Callable[[], float] | None = None) -> None:
        """Start a training step at θ^{s,0}. ``active=False`` (switched off) makes it one plain pass.
        ``measure_kl`` is needed with ``kl_budget``: this step's divergence from θ0's policy at the current
        weights."""
        if self.phase != "idle":
            raise RuntimeError(f"begin() called in phase {self.phase!r}; finish the step with end() first")
        sfpo_on = active and self.runs_stage_one
        if sfpo_on and self.kl_budget is not None and measure_kl is None:
            raise ValueError("kl_budget (trust-region SFPO) needs measure_kl for the step")
        self._measure_kl = measure_kl
        self.metrics = {"sfpo/active": float(active), "sfpo/alpha": self.alpha if sfpo_on else 0.0}
        if sfpo_on or self.keep_anchor:
            self._snapshot()
        self.phase = "fast" if sfpo_on else "slow"

    def record_pass(self, loss: Any = None) -> None:
        """Report that one pass of the base update finished (its loss, for the metrics)."""
        value = _pass_loss(loss)
        if self.phase == "fast":
            self.fast_done += 1
            if self.fast_done == 1:
                self.metrics["sfpo/loss_first_fast"] = value
            if self.fast_done == self.inner_steps:
                self.metrics["sfpo/loss_last_fast"] = value
                self.reposition()
                self.phase = "slow" if self.slow_pass else "done"
        elif self.phase == "slow":
            self.metrics["sfpo/loss_slow"] = value
            self.phase = "done"
        else:
            raise RuntimeError(f"record_pass() in phase {self.phase!r}: call begin() first")

    def end(self) -> dict[str, float]:
        """Close the step (after the slow pass); steps the scheduler if it is ours, returns the metrics."""
        if self.phase != "done":
            raise RuntimeError(f"end() in phase {self.phase!r}: the slow pass has not been recorded")
        if self.scheduler is not None and self.lr_stepping == "train_step":
            self.scheduler.step()
        metrics = self.metrics
        self._saved_opt_state = None  # a plain step's copy (kept for abort()) is not needed past the step
        self._reset()
        return metrics

    @torch.no_grad()
    def abort(self) -> bool:
        """Abandon the current step (e.g. a NaN loss): weights back to θ0 when the anchor holds them, phase back
        to idle. Optimizer updates already applied to the state (moments) are not undone. Returns whether the
        weights were restored."""
        restored = self.anchor.valid
        if restored:
            self.anchor.restore()
            if self._saved_opt_state is not None:
                self._load_optimizer_state(self._saved_opt_state)
        self._saved_opt_state = None
        if self._momentum_stepped:  # m holds the abandoned step's displacement: start the momentum afresh
            for m in self._momentum:
                m.zero_()
            logger.warning("SFPO outer momentum reset to zero: the step it had taken in was abandoned")
        self._reset()
        return restored

    def step(self, base_pass: Callable[[], Any], active: bool = True,
             measure_kl: Callable[[], float] | None = None) -> dict[str, float]:
        """One whole training step (Algorithm 1): θ0 is taken, Stage I runs ``base_pass()`` K times, the K-th
        pass's ``record_pass`` repositions (Stage II), Stage III runs it once more from θ̃. Switched off (or α = 0,
        or K = 0): one plain pass."""
        self.begin(active, measure_kl)
        timings = {"time/fast": 0.0, "time/slow": 0.0}

        def run_pass(stage: str) -> None:
            t0 = time.perf_counter()
            result = base_pass()
            timings[stage] += time.perf_counter() - t0
            self.record_pass(result)

        if self.phase == "fast":
            for _ in range(self.inner_steps):  # Stage I: K fast passes; after the K-th, Stage II (reposition)
                run_pass("time/fast")
        if self.phase == "slow":  # Stage III: the slow pass from θ̃ (or the one plain pass of a plain step)
            run_pass("time/slow")
        metrics = self.end()
        metrics.update(timings)
        return metrics

    # --------------------------------------------------------------------------------------------- stages
    @torch.no_grad()
    def _snapshot(self) -> None:
        """θ0 ← θ (Stage I starts here)."""
        self.anchor.take()
        if self.optimizer_state == "restore":
            self._saved_opt_state = self._copy_optimizer_state()

    @torch.no_grad()
    def reposition(self) -> None:
        """Stage II: θ̃ = θ0 + α(θK − θ0), in place as θ.lerp_(θ0, 1 − α); then the optimizer-state policy."""
        assert self.anchor.valid
        live = [p.detach() for p in self.params]
        drift = self.anchor.distance() if self.track_drift else None
        t0 = time.perf_counter()
        alpha = self.alpha if self.kl_budget is None else self._trust_region(live)
        reposition = None
        if self.outer_momentum:
            reposition, self.metrics["sfpo/momentum_norm"] = self._nesterov_reposition(live, alpha)
        elif self.kl_budget is None:
            self.anchor.pull(1.0 - alpha)
        self.metrics["sfpo/alpha"] = alpha
        if drift is not None:
            self.metrics["sfpo/drift_norm"] = drift
            # θ̃ − θ0 = α(θK − θ0) exactly in real arithmetic; no second pass over the weights is needed.
            self.metrics["sfpo/reposition_norm"] = alpha * drift if reposition is None else reposition
        if self.optimizer_state == "reset":
            for p in self.params:
                self.optimizer.state.pop(p, None)
        elif self.optimizer_state == "restore":
            self._load_optimizer_state(self._saved_opt_state)
            self._saved_opt_state = None
        self.metrics["time/reposition"] = time.perf_counter() - t0

    @torch.no_grad()
    def _nesterov_reposition(self, live: list[torch.Tensor], alpha: float) -> tuple[float, float]:
        """Stage II with outer Nesterov momentum; returns (‖θ̃ − θ0‖, ‖m‖).

        Read the fast trajectory's displacement D_s = θK − θ0 of training step s as a descent direction (minus
        DiLoCo's "outer gradient" θ0 − θK) and take one step of SGD with Nesterov momentum μ and step size α from
        θ0, in the form of ``torch.optim.SGD(nesterov=True)``:

            m_s = μ m_{s−1} + D_s,        θ̃ = θ0 + α (D_s + μ m_s).

        μ = 0 gives θ̃ = θ0 + α D_s, the paper's reposition. Unrolled, D_s + μ m_s = (1 + μ) D_s + μ² D_{s−1} +
        μ³ D_{s−2} + …, so a displacement that repeats (D_s = D) is taken α D / (1 − μ) far: the effective step
        grows as 1/(1 − μ), which is why momentum's best learning rate is smaller. m lives beside the anchor (one
        more copy of the trainable parameters); the arithmetic runs one tensor at a time (one transient tensor).
        """
        mu = self.outer_momentum
        if self._momentum is None:
            self._momentum = [torch.zeros_like(a) for a in self.anchor.tensors]
        rep_norms, mom_norms = [], []
        for i, (p, m) in enumerate(zip(live, self._momentum)):
            a_here = self.anchor.here(i, p.device)
            m_here = m.to(p.device, non_blocking=True)
            d = p.sub(a_here)                     # D = θK − θ0
            m_here.mul_(mu).add_(d)               # m ← μ m + D
            d.add_(m_here, alpha=mu)              # D + μ m
            p.copy_(a_here).add_(d, alpha=alpha)  # θ̃ = θ0 + α (D + μ m)
            if m_here is not m:
                m.copy_(m_here, non_blocking=True)
            rep_norms.append(_accurate_norm(d) * abs(alpha))
            mom_norms.append(_accurate_norm(m_here))
        self._momentum_stepped = True
        return norm_of(rep_norms), norm_of(mom_norms)

    _MAX_BACKTRACKS = 4

    def _trust_region(self, live: list[torch.Tensor]) -> float:
        """Move the weights from θK to θ̃ with the largest α ≤ ``alpha`` whose measured divergence is within
        ``kl_budget``; returns that α.

        A KL-like divergence along the segment grows as α² near θ0 (its gradient vanishes there), so the first
        guess is α = min(α_max, sqrt(budget / KL(θK))). It is checked at θ̃ and, while above the budget, shrunk
        by the same square-root rule (at most ``_MAX_BACKTRACKS`` times, then α = 0: θ̃ = θ0). Moving from α to
        α' < α is one more lerp toward θ0 by 1 − α'/α, because θ̃ − θ0 = α(θK − θ0). Costs one measurement at θK
        and one per α tried (both included in ``time/reposition``).
        """
        budget, kl_k = self.kl_budget, float(self._measure_kl())
        self.metrics["sfpo/kl_fast"] = kl_k
        # a non-finite divergence says nothing about where θK is: fall back to θ0 (the slow pass is then GRPO's)
        alpha = 0.0 if not math.isfinite(kl_k) else \
            self.alpha if kl_k <= budget else min(self.alpha, math.sqrt(budget / kl_k))
        self.anchor.pull(1.0 - alpha)
        # measured at θ̃ even when θK was within budget: KL along the segment need not be monotone
        kl, tries = (kl_k if alpha == 1.0 else 0.0 if alpha == 0.0 else float(self._measure_kl())), 0
        while alpha > 0.0 and not kl <= budget:
            new = 0.0 if tries == self._MAX_BACKTRACKS or not math.isfinite(kl) else \
                alpha * min(0.9, math.sqrt(budget / kl))
            self.anchor.pull(1.0 - new / alpha)
            alpha, tries = new, tries + 1
            kl = 0.0 if alpha == 0.0 else float(self._measure_kl())
        self.metrics["sfpo/kl_reposition"] = kl
        self.metrics["sfpo/alpha_backtracks"] = float(tries)
        return alpha

    def distance_from_anchor(self) -> tuple[float, float]:
        """(‖θ − θ0‖, ‖θ0‖) while a step holds its anchor: how far the step has moved the weights so far, for a
        guard against diverging updates (non-finite when a weight is). Reads both copies once."""
        if not self.anchor.valid:
            raise RuntimeError("no anchor to measure from: call begin() first (a plain step keeps one only with "
                               "keep_anchor=True)")
        return self.anchor.distance(), self.anchor.norm()

    # ---------------------------------------------------------------------------------- optimizer state
    def _copy_optimizer_state(self) -> dict[int, dict[str, Any]]:
        device = self.anchor_device
        saved = {}
        for i, p in enumerate(self.params):
            state = self.optimizer.state.get(p)
            if state:
                saved[i] = {k: (v.detach().to(device or v.device, copy=True), v.device) if torch.is_tensor(v)
                            else v for k, v in state.items()}
        return saved

    def _load_optimizer_state(self, saved: dict[int, dict[str, Any]]) -> None:
        for i, p in enumerate(self.params):
            if i in saved:
                self.optimizer.state[p] = {k: v[0].to(v[1]) if isinstance(v, tuple) else v
                                           for k, v in saved[i].items()}
            else:  # θ0 had no state yet (first step): restoring means "fresh"
                self.optimizer.state.pop(p, None)

    # -------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, also in the middle of a step (then θ0 travels with it)."""
        sd: dict[str, Any] = {"phase": self.phase, "fast_done": self.fast_done, "metrics": dict(self.metrics),
                              "inner_steps": self.inner_steps, "alpha": self.alpha,
                              "optimizer_state": self.optimizer_state, "outer_momentum": self.outer_momentum}
        if self._momentum is not None:  # kept across steps, so in every checkpoint (a copy, as the anchor)
            sd["momentum"] = [m.detach().clone() for m in self._momentum]
            sd["momentum_stepped"] = self._momentum_stepped
        if self.anchor.valid and (self.phase == "fast" or self.keep_anchor):
            # Copies, not references: training on must not change a checkpoint held in memory (the restore
            # policy hands its saved tensors back to the optimizer, which then updates them in place).
            sd["anchor"] = self.anchor.copies()
            sd["saved_optimizer_state"] = _clone_state(self._saved_opt_state)
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        for key, before in (("inner_steps", sd["inner_steps"]), ("alpha", sd["alpha"]),
                            ("optimizer_state", sd["optimizer_state"]),
                            ("outer_momentum", sd.get("outer_momentum", 0.0))):  # absent: a checkpoint from before μ
            if before != getattr(self, key):
                logger.warning("SFPO %s was %r in the checkpoint and is %r now", key, before, getattr(self, key))
        self.phase, self.fast_done, self.metrics = sd["phase"], sd["fast_done"], dict(sd["metrics"])
        self._momentum, self._momentum_stepped = None, False
        if sd.get("momentum") is not None and self.outer_momentum:
            if len(sd["momentum"]) != len(self.params) or \
                    any(m.shape != p.shape for m, p in zip(sd["momentum"], self.params)):
                raise ValueError("checkpointed SFPO outer momentum does not match the trainable parameters")
            device = self.anchor_device
            self._momentum = [m.to(device or p.device, dtype=p.dtype, copy=True)
                              for m, p in zip(sd["momentum"], self.params)]
            self._momentum_stepped = bool(sd.get("momentum_stepped", False))
        self.anchor.valid, self._saved_opt_state = False, None
        if sd.get("anchor") is not None:
            self.anchor.load(sd["anchor"])
            self._saved_opt_state = _clone_state(sd.get("saved_optimizer_state"))

    def extra_bytes(self) -> int:
        """Bytes this object keeps alive: the anchor, the outer momentum and a restore-policy optimizer-state
        copy."""
        tensors = list(self._momentum or [])
        for state in (self._saved_opt_state or {}).values():
            tensors += [v[0] for v in state.values() if isinstance(v, tuple)]
        return self.anchor.nbytes() + sum(t.numel() * t.element_size() for t in tensors)


def _accurate_norm(t: torch.Tensor) -> torch.Tensor:
    """‖t‖ accumulated in at least float32 (bf16/fp16 tensors are not summed in their own precision)."""
    return torch.linalg.vector_norm(t, dtype=torch.float32 if t.element_size() < 4 else None)


def _clone_state(saved: dict[int, dict[str, Any]] | None) -> dict[int, dict[str, Any]] | None:
    """A copy of a saved optimizer state ({index: {key: (tensor, device) or value}}) sharing no tensor."""
    if saved is None:
        return None
    return {i: {k: (v[0].detach().clone(), v[1]) if isinstance(v, tuple) else v for k, v in state.items()}
            for i, state in saved.items()}
