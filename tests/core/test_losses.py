"""Policy losses against a per-token Python loop that writes each formula out once, values and gradients;
aggregation semantics on hand-made numbers; micro-batch invariance with the full-batch normaliser.

Everything runs in float64, so "equal" means equal to ~1e-12, not to a loose tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

from sfpo.core import LossConfig, aggregate, entropy_from_logits, loss_normalizer, policy_loss, token_logprobs

TOL = dict(rtol=1e-12, atol=1e-12)


def make_batch(seed: int = 0, B: int = 6, T: int = 9, spread: float = 0.4):
    """Random log-probs near the rollout policy's (so that some ratios clip), random response lengths,
    garbage (but finite) values in the padding, which must not leak into anything."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[:2] = T  # full-length responses, one of them with A = 0 below
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2.0 - 0.1
    logp = old + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    pad = mask == 0
    logp[pad] = 3.0 * torch.randn(int(pad.sum()), generator=g, dtype=torch.float64)
    old[pad] = 0.0
    ref = old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ent = torch.rand(B, T, generator=g, dtype=torch.float64) * 2.0
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    adv[1] = 0.0  # all-equal rewards in its group: no gradient, and its low ratios are not "clipped"
    return logp.requires_grad_(), old, adv, mask, ref, ent.requires_grad_()


def reference_loss(logp, old, adv, mask, cfg: LossConfig, ref=None, ent=None, normalizer=None):
    """The objective token by token, as the papers write it, with the clipping counts beside it."""
    B, T = logp.shape
    eps_low = cfg.clip_low
    eps_high = cfg.clip_low if cfg.clip_high is None else cfg.clip_high
    per_seq_sums, per_seq_counts = [], []
    n_low = n_high = n_tokens = 0
    ratio_sum = 0.0
    for b in range(B):
        tokens = [t for t in range(T) if mask[b, t] > 0]
        if cfg.ratio_level == "sequence":  # GSPO: s_b = exp(mean_t (log π − log π_old))
            seq_ratio = torch.exp(sum(logp[b, t] - old[b, t] for t in tokens) / len(tokens))
        total = torch.zeros((), dtype=logp.dtype)
        for t in tokens:
            r = seq_ratio if cfg.ratio_level == "sequence" else torch.exp(logp[b, t] - old[b, t])
            r_clip = torch.clamp(r, 1.0 - eps_low, 1.0 + eps_high)
            loss = -torch.minimum(r * adv[b], r_clip * adv[b])
            if cfg.kl_coef:
                d = ref[b, t] - logp[b, t]
                loss = loss + cfg.kl_coef * (torch.exp(d) - d - 1.0)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * ent[b, t]
            total = total + loss
            n_tokens += 1
            n_low += int(r.item() < 1.0 - eps_low and adv[b].item() < 0)
            n_high += int(r.item() > 1.0 + eps_high and adv[b].item() > 0)
            ratio_sum += r.item()
        per_seq_sums.append(total)
        per_seq_counts.append(len(tokens))
    if cfg.aggregation == "token_mean":
        value = sum(per_seq_sums) / (normalizer or sum(per_seq_counts))
    elif cfg.aggregation == "seq_mean_token_mean":
        value = sum(s / n for s, n in zip(per_seq_sums, per_seq_counts)) / (normalizer or B)
    else:  # constant_length (Dr.GRPO): sum over the batch / (responses × max_length)
        value = sum(per_seq_sums) / (cfg.max_length * (normalizer or B))
    metrics = {"clip_ratio/low": n_low / n_tokens, "clip_ratio/high": n_high / n_tokens,
               "ratio/mean": ratio_sum / n_tokens}
    return value, metrics


CONFIGS = {
    "grpo_token_mean": LossConfig(),
    "grpo_seq_mean_token_mean": LossConfig(aggregation="seq_mean_token_mean"),
    "drgrpo_constant_length": LossConfig(aggregation="constant_length", max_length=12),
    "dapo_clip_high": LossConfig(clip_low=0.2, clip_high=0.28),
    "gspo_sequence_ratio": LossConfig(ratio_level="sequence", clip_low=3e-4, clip_high=4e-4,
                                      aggregation="seq_mean_token_mean"),
    "k3_kl": LossConfig(kl_coef=0.05),
    "entropy_bonus": LossConfig(entropy_coef=0.01),
    "everything": LossConfig(clip_high=0.28, aggregation="constant_length", max_length=10, kl_coef=0.1,
                             entropy_coef=0.003),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_values_gradients_and_metrics_match_the_reference(name, seed):
    cfg = CONFIGS[name]
    # GSPO clips a length-normalised ratio at ±3e-4: log-ratios of that order make some sequences clip
    logp, old, adv, mask, ref, ent = make_batch(seed, spread=2e-3 if cfg.ratio_level == "sequence" else 0.4)
    loss, metrics = policy_loss(logp, old, adv, mask, cfg, ref_logprobs=ref, entropy=ent)
    g_logp, g_ent = torch.autograd.grad(loss, [logp, ent], allow_unused=True)
    want, want_metrics = reference_loss(logp, old, adv, mask, cfg, ref=ref, ent=ent)
    w_logp, w_ent = torch.autograd.grad(want, [logp, ent], allow_unused=True)

    torch.testing.assert_close(loss, want, **TOL)
    torch.testing.assert_close(g_logp, w_logp, **TOL)
    assert torch.count_nonzero(g_logp[mask == 0]) == 0  # padding gets no gradient
    if cfg.entropy_coef:
        torch.testing.assert_close(g_ent, w_ent, **TOL)
    else:
        assert g_ent is None or torch.count_nonzero(g_ent) == 0
    for key in ("clip_ratio/low", "clip_ratio/high", "ratio/mean"):
        assert metrics[key] == pytest.approx(want_metrics[key], rel=1e-12, abs=1e-15), key
    assert metrics["clip_ratio/region_mean"] == pytest.approx(
        want_metrics["clip_ratio/low"] + want_metrics["clip_ratio/high"], rel=1e-12, abs=1e-15)
    # the batches must exercise the clipping at all, or the clip terms above were never tested
    assert metrics["clip_ratio/region_mean"] > 0
    assert metrics["entropy"] == pytest.approx(float((ent.detach() * mask).sum() / mask.sum()), rel=1e-12)
    if cfg.kl_coef:
        d = ref - logp.detach()
        assert metrics["kl"] == pytest.approx(float(((d.exp() - d - 1) * mask).sum() / mask.sum()), rel=1e-12)


def test_clip_higher_lets_a_rising_token_keep_its_gradient():
    """One token, A = +1, ratio 1.25: PPO's ε = 0.2 clips it (no gradient); DAPO's ε_high = 0.28 does not.
    A falling token, A = −1, ratio 0.75, is clipped by ε_low = 0.2 in both."""
    old = torch.zeros(2, 1, dtype=torch.float64)
    mask = torch.ones(2, 1, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    for clip_high, rising_grad in [(None, 0.0), (0.28, -1.25 / 2)]:  # d(−r A)/d log π = −r A, token_mean over 2
        logp = torch.tensor([[math.log(1.25)], [math.log(0.75)]], dtype=torch.float64, requires_grad=True)
        loss, metrics = policy_loss(logp, old, adv, mask, LossConfig(clip_low=0.2, clip_high=clip_high))
        (grad,) = torch.autograd.grad(loss, logp)
        assert grad[0, 0].item() == pytest.approx(rising_grad, abs=1e-15)
        assert grad[1, 0].item() == 0.0
        assert metrics["clip_ratio/low"] == 0.5
        assert metrics["clip_ratio/high"] == (0.5 if clip_high is None else 0.0)


def test_gspo_ratio_is_one_number_per_sequence():
    """GSPO clips the whole response or none of it: the gradient of each token is −s_b A_b / n_b when
    unclipped (d s_b / d log π_bt = s_b / n_b), so all tokens of a response get the same gradient."""
    logp, old, adv, mask, _, _ = make_batch(0, spread=2e-3)
    cfg = CONFIGS["gspo_sequence_ratio"]
    loss, _ = policy_loss(logp, old, adv, mask, cfg)
    (grad,) = torch.autograd.grad(loss, logp)
    n = mask.sum(-1)
    s = torch.exp(((logp.detach() - old) * mask).sum(-1) / n)
    clipped = ((s > 1 + 4e-4) & (adv > 0)) | ((s < 1 - 3e-4) & (adv < 0))
    want = torch.where(clipped, 0.0, -s * adv / n / len(n))[:, None] * mask  # seq_mean over B responses
    torch.testing.assert_close(grad, want, **TOL)
    assert clipped.any() and (~clipped & (adv != 0)).any()  # both cases occur


# ------------------------------------------------------------------------------------------ aggregation


def test_aggregations_do_what_their_names_say():
    """Two responses with constant per-token losses 1 (4 tokens) and 3 (1 token), padded to T = 6:
    token_mean          = (4·1 + 1·3) / 5 tokens          = 1.4    (long responses weigh more)
    seq_mean_token_mean = (mean 1 + mean 3) / 2 responses = 2.0    (every response weighs the same)
    constant_length     = (4·1 + 1·3) / (2 responses · 8) = 0.4375 (Dr.GRPO, L = 8: no length division)
    Extra padding columns change none of them."""
    values = torch.tensor([[1.0, 1, 1, 1, 9, 9], [3, 9, 9, 9, 9, 9]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.float64)
    wide_v, wide_m = torch.cat([values, torch.full((2, 4), 7.0)], 1), torch.cat([mask, torch.zeros(2, 4)], 1)
    for v, m in [(values, mask), (wide_v, wide_m)]:
        assert aggregate(v, m, "token_mean").item() == 1.4
        assert aggregate(v, m, "seq_mean_token_mean").item() == 2.0
        assert aggregate(v, m, "constant_length", max_length=8).item() == 0.4375
    assert loss_normalizer("token_mean", mask) == 5.0
    assert loss_normalizer("seq_mean_token_mean", mask) == loss_normalizer("constant_length", mask) == 2.0
    assert aggregate(values, torch.zeros_like(mask), "token_mean").item() == 0.0  # no tokens: 0, not NaN
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(values, mask, "sum")
    with pytest.raises(ValueError, match="max_length"):
        aggregate(values, mask, "constant_length")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_micro_batches_with_the_full_normaliser_add_up_to_the_full_batch(name):
    cfg = CONFIGS[name]
    logp, old, adv, mask, ref, ent = make_batch(5, spread=2e-3 if cfg.ratio_level == "sequence" else 0.4)
    full, _ = policy_loss(logp, old, adv, mask, cfg, ref_logprobs=ref, entropy=ent)
    g_full = torch.autograd.grad(full, [logp, ent], allow_unused=True)
    norm = loss_normalizer(cfg.aggregation, mask)
    total = 0.0
    for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven micro-batches
        part, _ = policy_loss(logp[rows], old[rows], adv[rows], mask[rows], cfg, ref_logprobs=ref[rows],
                              entropy=ent[rows], normalizer=norm)
        total = total + part
    g_total = torch.autograd.grad(total, [logp, ent], allow_unused=True)
    torch.testing.assert_close(total, full, **TOL)
    for a, b in zip(g_total, g_full):
        torch.testing.assert_close(a, b, **TOL)


def test_micro_batches_without_the_normaliser_are_biased_for_token_mean_only():
    """Averaging per-micro-batch token means weighs each micro-batch equally, not each token: wrong for
    token_mean when micro-batches hold different numbers of tokens. Per-response aggregations do not have the
    problem when micro-batches hold equal numbers of responses."""
    logp, old, adv, mask, _, _ = make_batch(6)
    halves = (slice(0, 3), slice(3, 6))
    assert mask[halves[0]].sum() != mask[halves[1]].sum()
    for agg, unbiased in [("token_mean", False), ("seq_mean_token_mean", True), ("constant_length", True)]:
        cfg = LossConfig(aggregation=agg, max_length=9)
        full = policy_loss(logp, old, adv, mask, cfg)[0].item()
        mean_of_parts = sum(policy_loss(logp[h], old[h], adv[h], mask[h], cfg)[0].item() for h in halves) / 2
        assert (abs(mean_of_parts - full) < 1e-12) == unbiased, agg


# ---------------------------------------------------------------------------------------- errors, shapes


def test_config_and_argument_errors():
    with pytest.raises(ValueError, match="unknown aggregation"):
        LossConfig(aggregation="sum")
    with pytest.raises(ValueError, match="ratio_level"):
        LossConfig(ratio_level="group")
    with pytest.raises(ValueError, match="max_length"):
        LossConfig(aggregation="constant_length")
    with pytest.raises(ValueError, match="clip"):
        LossConfig(clip_low=-0.1)
    logp, old, adv, mask, ref, ent = make_batch()
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logp, old, adv, mask, LossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, adv, mask, LossConfig(entropy_coef=0.1))


def test_shapes_are_checked():
    """(B, 1) advantages used to broadcast to (B, B, T) and return a wrong loss without a word."""
    logp, old, adv, mask, ref, ent = make_batch()
    with pytest.raises(ValueError, match=r"advantages must have shape \(B,\)"):
        policy_loss(logp, old, adv[:, None], mask)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old, adv[:-1], mask)
    with pytest.raises(ValueError, match="mask has shape"):
        policy_loss(logp, old, adv, mask[:, :-1])
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        policy_loss(logp, old[:, :-1], adv, mask)
    with pytest.raises(ValueError, match="entropy has shape"):
        policy_loss(logp, old, adv, mask, entropy=ent[:-1])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        policy_loss(logp[0], old[0], adv[:1], mask[0])


# ------------------------------------------------------------------------------- log-probs and entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_and_entropy(temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64) * 3
    ids = torch.randint(0, 11, (3, 5), generator=g)
    logp = token_logprobs(logits, ids, temperature)
    ent = entropy_from_logits(logits, temperature)
    scaled = logits.float() / temperature
    for b in range(3):
        for t in range(5):
            want = torch.log_softmax(scaled[b, t], -1)[ids[b, t]]
            assert logp[b, t].item() == pytest.approx(want.item(), abs=1e-5)
            p = torch.softmax(scaled[b, t].double(), -1)
            assert ent[b, t].item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-5)
    assert logp.dtype == ent.dtype == torch.float32  # float32 even from half-precision logits
    assert token_logprobs(logits.bfloat16(), ids).dtype == torch.float32
    # a uniform distribution over V has entropy log V; a one-hot one has 0
    assert entropy_from_logits(torch.zeros(1, 1, 11)).item() == pytest.approx(math.log(11), abs=1e-6)
    assert entropy_from_logits(torch.tensor([[[0.0, -1e4, -1e4]]])).item() == pytest.approx(0.0, abs=1e-6)


def verl_vanilla_policy_loss(old_log_prob, log_prob, advantages, response_mask, cliprange_low, cliprange_high,
                             clip_ratio_c, agg):
    """verl's ``compute_policy_loss_vanilla`` (verl/trainer/ppo/core_algos.py) written out again from its formula,
    verl not being installed here: token-mean or seq-mean-token-mean of the dual-clipped PPO loss."""
    advantages = advantages[:, None].expand_as(log_prob)
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange_low, 1 + cliprange_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    lower = (torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0)).to(response_mask.dtype)
    pg_clipfrac_lower = (lower * response_mask).sum() / response_mask.sum()
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    if agg == "token-mean":
        loss = (pg_losses * response_mask).sum() / response_mask.sum()
    else:  # "seq-mean-token-mean"
        loss = ((pg_losses * response_mask).sum(-1) / response_mask.sum(-1)).mean()
    return loss, pg_clipfrac_lower


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("agg", [("token_mean", "token-mean"), ("seq_mean_token_mean", "seq-mean-token-mean")])
def test_dual_clip_equals_verls_vanilla_policy_loss(seed, agg):
    """Random inputs with ratios up to e^±3, so that the dual clip (c = 3, verl's default) binds on some tokens."""
    logp, old, adv, mask, _, _ = make_batch(seed, B=16, T=12, spread=1.5)
    cfg = LossConfig(clip_low=0.2, clip_high=0.28, aggregation=agg[0], clip_ratio_c=3.0)
    loss, metrics = policy_loss(logp, old, adv, mask, cfg)
    ref_logp = logp.detach().clone().requires_grad_()
    ref, ref_lower = verl_vanilla_policy_loss(old, ref_logp, adv, mask, 0.2, 0.28, 3.0, agg[1])
    assert ref_lower > 0  # the dual clip really binds somewhere
    torch.testing.assert_close(loss, ref, **TOL)
    assert metrics["clip_ratio/dual"] == pytest.approx(float(ref_lower), abs=1e-12)
    (g,) = torch.autograd.grad(loss, logp)
    (g_ref,) = torch.autograd.grad(ref, ref_logp)
    torch.testing.assert_close(g, g_ref, **TOL)
    # without the dual clip the loss differs exactly where it binds: it is a real option, not a no-op
    plain, _ = policy_loss(logp, old, adv, mask, LossConfig(clip_low=0.2, clip_high=0.28, aggregation=agg[0]))
    assert float(plain) < float(loss) - 1e-6 or float(plain) > float(loss) + 1e-6


def test_dual_clip_must_exceed_one():
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        LossConfig(clip_ratio_c=1.0)
