"""Clipped policy-gradient losses (PPO/GRPO, dual-clip, DAPO clip-higher, Dr.GRPO, GSPO) as pure functions.

``policy_loss`` returns ``(loss, metrics)``; it never calls ``backward`` and holds no state. Aggregation over
tokens is explicit, and a ``normalizer`` makes micro-batched gradient accumulation equal to the full batch.
Log-probs and entropies come either from full logits (``token_logprobs``, ``entropy_from_logits``) or straight from
the final hidden states and the output head (``head_logprobs``: chunked over tokens, only one chunk's logits and
their softmax alive at a time, forward or backward). No model code lives here: finding a model's head is
``sfpo.policy``'s job.

Shapes: B = responses in the (micro-)batch, T = response length (padded); masks are 1 on response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["LossConfig", "AGGREGATIONS", "policy_loss", "aggregate", "loss_normalizer", "token_logprobs",
           "entropy_from_logits", "head_logprobs", "HEAD_CHUNK_TOKENS"]

Aggregation = Literal["token_mean", "seq_mean_token_mean", "constant_length"]
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "constant_length")
HEAD_CHUNK_TOKENS = 512
"""Tokens per chunk of ``head_logprobs``, from benchmarks/bench_head.py (docs/gpu.md): at a 151,936-token
vocabulary its peak stays ≥ 16× below full logits at 8k tokens and its CPU time below theirs; 128 halves the peak
but is slower."""


@dataclass(frozen=True)
class LossConfig:
    """The base policy objective. Presets: GRPO = defaults; DAPO = ``clip_high=0.28``, token_mean;
    Dr.GRPO = ``aggregation="constant_length"`` (+ Dr.GRPO advantages); GSPO = ``ratio_level="sequence"``
    with ``clip_low=3e-4, clip_high=4e-4`` and seq_mean_token_mean."""

    clip_low: float = 0.2
    """ε_low: ratios below 1-ε_low stop contributing gradient for negative advantages."""
    clip_high: float | None = None
    """ε_high (DAPO clip-higher); None means ε_high = ε_low."""
    ratio_level: Literal["token", "sequence"] = "token"
    """"token": per-token ratio (PPO/GRPO); "sequence": GSPO's length-normalised sequence ratio."""
    aggregation: Aggregation = "token_mean"
    """How per-token losses become one number: mean over all tokens of the batch, mean over responses of the
    per-response token mean (original GRPO), or sum divided by responses × ``max_length`` (Dr.GRPO)."""
    max_length: int | None = None
    """The constant for ``constant_length`` aggregation (usually the generation limit)."""
    kl_coef: float = 0.0
    """β: weight of the k3 KL estimate to the reference policy; 0 disables it (the SFPO paper's setting)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (subtracted from the loss); the SFPO paper uses 0.001."""
    clip_ratio_c: float | None = None
    """Dual-clip PPO (Ye et al. 2020): for a negative advantage the per-token loss is at most −c·A, so a token
    whose ratio ran far above 1 cannot push unboundedly. None = off; verl's default (and the official SFPO
    scripts') is 3.0. Must exceed 1."""

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; known: {AGGREGATIONS}")
        if self.ratio_level not in ("token", "sequence"):
            raise ValueError(f"ratio_level must be 'token' or 'sequence', got {self.ratio_level!r}")
        if self.aggregation == "constant_length" and not self.max_length:
            raise ValueError("aggregation='constant_length' (Dr.GRPO) needs max_length, the constant divisor")
        if self.clip_low < 0 or (self.clip_high is not None and self.clip_high < 0):
            raise ValueError("clip ranges must be >= 0")
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (the dual clip bounds −A·ratio at −A·c), got "
                             f"{self.clip_ratio_c}")


def loss_normalizer(aggregation: str, mask: torch.Tensor) -> float:
    """The denominator ``aggregate`` uses for ``mask``: pass the value computed on a whole mini-batch to each of
    its micro-batches so that the accumulated gradient equals the full mini-batch's."""
    if aggregation == "token_mean":
        return float(mask.sum())
    return float(mask.shape[0])


def aggregate(values: torch.Tensor, mask: torch.Tensor, aggregation: str, max_length: int | None = None,
              normalizer: float | None = None) -> torch.Tensor:
    """Reduce per-token ``values`` (B, T) to a scalar. ``normalizer`` overrides the batch's own count
    (tokens for token_mean, responses otherwise); see ``loss_normalizer``."""
    mask = mask.to(values.dtype)
    if aggregation == "token_mean":
        denom = normalizer if normalizer is not None else mask.sum()
        return (values * mask).sum() / torch.clamp_min(torch.as_tensor(denom, dtype=values.dtype), 1.0)
    n_seq = normalizer if normalizer is not None else mask.shape[0]
    if aggregation == "seq_mean_token_mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)  # (B,)
        return per_seq.sum() / max(n_seq, 1)
    if aggregation == "constant_length":
        if not max_length:
            raise ValueError("constant_length aggregation needs max_length")
        return (values * mask).sum() / (max_length * max(n_seq, 1))
    raise ValueError(f"unknown aggregation {aggregation!r}; known: {AGGREGATIONS}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp_min(1.0))


def _check_shapes(logprobs: torch.Tensor, **others: torch.Tensor | None) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (B, T), got shape {tuple(logprobs.shape)}")
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, logprobs {tuple(logprobs.shape)}; "
                             "they must match token for token")


def policy_loss(
    logprobs: torch.Tensor,  # (B, T) log π_θ(o_t | ...) of the sampled tokens, with grad
    old_logprobs: torch.Tensor,  # (B, T) log π_θ0 at the rollout policy, no grad
    advantages: torch.Tensor,  # (B,) one advantage per response
    mask: torch.Tensor,  # (B, T) 1 on response tokens
    cfg: LossConfig = LossConfig(),
    *,
    ref_logprobs: torch.Tensor | None = None,  # (B, T) reference policy, needed when kl_coef > 0
    entropy: torch.Tensor | None = None,  # (B, T) token entropies of π_θ, needed when entropy_coef > 0
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate  -min(r A, clip(r, 1-ε_low, 1+ε_high) A)  (+ β·KL_k3 − c·H), aggregated; with
    ``clip_ratio_c`` the surrogate of a negative-advantage token is further capped at −c·A (dual clip)."""
    _check_shapes(logprobs, old_logprobs=old_logprobs, mask=mask, ref_logprobs=ref_logprobs, entropy=entropy)
    if advantages.shape != logprobs.shape[:1]:
        # (B, 1) would broadcast against (B, T) into (B, B, T) and give a wrong loss without any error.
        raise ValueError(f"advantages must have shape (B,) = {tuple(logprobs.shape[:1])}, one per response; "
                         f"got {tuple(advantages.shape)}")
    mask = mask.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)  # (B, 1)
    log_ratio = logprobs - old_logprobs  # (B, T)
    if cfg.ratio_level == "sequence":
        # GSPO: s_i = exp(mean_t log-ratio), the same value on every token of response i.
        seq_log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1.0)
        log_ratio = seq_log_ratio.expand_as(logprobs)
    ratio = torch.exp(log_ratio)
    clip_high = cfg.clip_low if cfg.clip_high is None else cfg.clip_high
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + clip_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (B, T)
    if cfg.clip_ratio_c is not None:
        dual = torch.minimum(per_token, -cfg.clip_ratio_c * adv)  # ≤ −c·A, binding only for A < 0
        dual_hit = (per_token > -cfg.clip_ratio_c * adv) & (adv < 0)
        per_token = torch.where(adv < 0, dual, per_token)
    metrics: dict[str, float] = {}
    with torch.no_grad():
        low = (ratio < 1.0 - cfg.clip_low) & (adv < 0)
        high = (ratio > 1.0 + clip_high) & (adv > 0)
        metrics["clip_ratio/low"] = _masked_mean(low.to(mask.dtype), mask)
        metrics["clip_ratio/high"] = _masked_mean(high.to(mask.dtype), mask)
        metrics["clip_ratio/region_mean"] = metrics["clip_ratio/low"] + metrics["clip_ratio/high"]
        metrics["ratio/mean"] = _masked_mean(ratio, mask)
        if cfg.clip_ratio_c is not None:
            metrics["clip_ratio/dual"] = _masked_mean(dual_hit.to(mask.dtype), mask)
    if cfg.kl_coef:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0  # k3 estimator of KL(π_θ || π_ref), >= 0
        per_token = per_token + cfg.kl_coef * kl
        metrics["kl"] = _masked_mean(kl.detach(), mask)
    if entropy is not None:
        metrics["entropy"] = _masked_mean(entropy.detach(), mask)
    if cfg.entropy_coef:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs entropy")
        per_token = per_token - cfg.entropy_coef * entropy
    loss = aggregate(per_token, mask, cfg.aggregation, cfg.max_length, normalizer)
    return loss, metrics


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T) gathered at ``token_ids``: (B, T, V), (B, T) -> (B, T), in float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, token_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Token entropy H = logsumexp(z) - Σ softmax(z) z: (B, T, V) -> (B, T), in float32."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_v a[n, v] b[n, v] as a batched matmul: (N, V), (N, V) -> (N,) without an (N, V) product tensor."""
    return (a[:, None, :] @ b[:, :, None])[:, 0, 0]


class _ChunkedHead(torch.autograd.Function):
    """log π(token) and H at temperature τ from hidden states (N, d) and a head (V, d) [+ bias (V,)], one chunk of
    tokens at a time. The backward recomputes each chunk's logits z = (h Wᵀ + b)/τ instead of keeping them, with
    p = softmax(z):  ∂ log p_y/∂z = onehot(y) − p,  ∂H/∂z = −p ⊙ (z − Σ p z)  (H = lse(z) − Σ p z).
    The matmuls run in the dtype the forward's logits had (bf16 under autocast, as the full path's); the softmax
    arithmetic and the results are float32 (float64 from float64 inputs)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk: int, with_entropy: bool):
        n = hidden.shape[0]
        compute_dtype = torch.nn.functional.linear(hidden[:1], weight[:1]).dtype  # bf16 under autocast
        out_dtype = torch.promote_types(compute_dtype, torch.float32)  # float32, or float64 from float64
        logp = torch.empty(n, dtype=out_dtype, device=hidden.device)
        ent = torch.empty(n, dtype=out_dtype, device=hidden.device) if with_entropy else None
        for s in range(0, n, chunk):
            logits = torch.nn.functional.linear(hidden[s:s + chunk], weight, bias)  # (n_c, V), autocast applies
            z = logits.to(out_dtype)
            del logits
            if temperature != 1.0:
                z = z.div_(temperature)
            lse = torch.logsumexp(z, dim=-1)
            logp[s:s + chunk] = z.gather(-1, targets[s:s + chunk, None]).squeeze(-1) - lse
            if with_entropy:
                ent[s:s + chunk] = lse - torch.softmax(z, dim=-1).mul_(z).sum(-1)  # entropy_from_logits' sum
            del z  # before the next chunk's logits exist
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature, ctx.chunk, ctx.compute_dtype, ctx.out_dtype = temperature, chunk, compute_dtype, out_dtype
        ctx.mark_non_differentiable(targets)
        return logp, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp, grad_ent):
        hidden, weight, bias, targets = ctx.saved_tensors
        tau, chunk, dtype, out_dtype = ctx.temperature, ctx.chunk, ctx.compute_dtype, ctx.out_dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        w = weight.to(dtype)  # one cast for all chunks (autocast casts once per forward, too)
        b = bias.to(dtype) if bias is not None else None
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=out_dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=out_dtype, device=bias.device) if need_b else None
        with torch.autocast(hidden.device.type, enabled=False):  # the forward's dtype, whatever the caller's
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s:s + chunk].to(dtype)
                z = torch.nn.functional.linear(h, w, b).to(out_dtype)  # (n_c, V)
                if tau != 1.0:
                    z = z.div_(tau)
                p = torch.softmax(z, dim=-1)
                if grad_ent is not None:  # −p (z − Σ p z) g_H, built in z's storage
                    gz = z.sub_(_rowdot(p, z)[:, None]).mul_(p).mul_(-grad_ent[s:s + chunk, None])
                else:
                    gz = z.zero_()
                if grad_logp is not None:  # (onehot(y) − p) g_logp
                    g = grad_logp[s:s + chunk, None]
                    gz.sub_(p.mul_(g)).scatter_add_(-1, targets[s:s + chunk, None], g)
                del p
                if tau != 1.0:
                    gz.div_(tau)
                gz = gz.to(dtype)
                if need_h:
                    grad_h[s:s + chunk] = gz @ w
                if need_w:
                    if dtype == out_dtype:
                        grad_w.addmm_(gz.t(), h)
                    else:
                        grad_w.add_(gz.t() @ h)
                if need_b:
                    grad_b.add_(gz.sum(0, dtype=out_dtype))
                del gz  # before the next chunk's logits exist
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None, None)


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0,
                  bias: torch.Tensor | None = None, chunk_size: int = HEAD_CHUNK_TOKENS,
                  with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``token_logprobs`` and ``entropy_from_logits`` of the logits ``hidden @ weightᵀ + bias`` without ever holding
    them: (..., d), (V, d), (...) -> two (...) float32 tensors (entropy None unless ``with_entropy``).

    Only ``chunk_size`` tokens' logits (chunk_size × V, with their softmax) are alive at a time, in the forward and
    in the backward, which recomputes them; gradients reach ``hidden``, ``weight`` (a tied embedding included) and
    ``bias``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.shape[:-1] != token_ids.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and token_ids {tuple(token_ids.shape)} must match up to "
                         "the hidden size")
    shape = token_ids.shape
    logp, ent = _ChunkedHead.apply(hidden.reshape(-1, hidden.shape[-1]), weight, bias, token_ids.reshape(-1),
                                   float(temperature), int(chunk_size), with_entropy)
    return logp.view(shape), (ent.view(shape) if with_entropy else None)
