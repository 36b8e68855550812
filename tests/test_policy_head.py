"""The chunked output head (``sfpo.policy.sequence_logprobs`` with ``chunk_size`` > 0) against the full-logits path
it replaces, on a tiny Qwen2 with Qwen2.5's 151,936-token vocabulary: log-probs, entropies and every parameter
gradient equal to float32 rounding (1e-6), with and without temperature, tied and untied heads, a head with a bias,
LoRA; bf16 autocast within the mixed-precision test's tolerance; a model whose head cannot be used falls back,
saying why, once."""

from __future__ import annotations

import logging

import pytest
import torch

from sfpo.core import head_logprobs
from sfpo.policy import output_head, sequence_logprobs

V = 151_936


def tiny(tied: bool = True, bias: bool = False, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied,
                      max_position_embeddings=64)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    if bias:  # a head with a bias (GPT-2-style heads have none, but nn.Linear allows it): replaced, untied
        head = torch.nn.Linear(16, V, bias=True)
        torch.nn.init.normal_(head.bias, std=0.5)
        model.lm_head = head
    return model.train()


def batch(seed: int = 1):
    """2 rows, left-padded prompts of 5/3 tokens, responses of 7/4 tokens (right padding)."""
    g = torch.Generator().manual_seed(seed)
    pids, cids = torch.randint(0, V, (2, 5), generator=g), torch.randint(0, V, (2, 7), generator=g)
    pmask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    cmask = torch.tensor([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])
    return pids, pmask, cids, cmask


def logprobs_and_grads(model, chunk_size: int, temperature: float, autocast: bool = False):
    """(log-probs, entropies) on response tokens and the gradients of a loss that uses both (as the trainer's)."""
    pids, pmask, cids, cmask = batch()
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        logp, ent = sequence_logprobs(model, pids, pmask, cids, cmask, temperature, chunk_size=chunk_size)
    keep = cmask.bool()
    w = torch.linspace(-1.0, 1.0, int(keep.sum()))  # distinct weights per token: a wrong row would show
    ((logp[keep] * w).sum() + 0.3 * (ent[keep] * w.flip(0)).sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp[keep].detach(), ent[keep].detach(), grads


def assert_close(full, chunked, tol: float = 1e-6):
    logp0, ent0, g0 = full
    logp1, ent1, g1 = chunked
    assert logp1.dtype == ent1.dtype == torch.float32
    assert (logp1 - logp0).abs().max() <= tol * max(1.0, float(logp0.abs().max()))
    assert (ent1 - ent0).abs().max() <= tol * max(1.0, float(ent0.abs().max()))
    assert g0.keys() == g1.keys() and g0
    # relative to the largest gradient entry of the model: float32 rounding reaches every tensor at that scale
    # (k_proj's bias has a true gradient of 0, softmax ignores q·b_k, so its computed value is rounding alone)
    scale = max(float(g.abs().max()) for g in g0.values())
    for name in g0:
        assert float((g1[name] - g0[name]).abs().max()) <= tol * scale, name


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("tied,bias", [(True, False), (False, False), (False, True)])
def test_chunked_head_equals_full_logits(temperature, tied, bias):
    model = tiny(tied=tied, bias=bias)
    assert isinstance(output_head(model), tuple)
    full = logprobs_and_grads(model, 0, temperature)
    for chunk in (3, 512):  # several chunks, and one chunk holding every token
        assert_close(full, logprobs_and_grads(model, chunk, temperature))
    if tied:  # the head's gradient reached the embedding matrix it shares
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_chunked_head_under_lora():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                        task_type="CAUSAL_LM"))
    for p in model.parameters():  # LoRA B starts at zero, which would give zero gradients to A
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    assert isinstance(output_head(model), tuple)
    full = logprobs_and_grads(model, 0, 0.7)
    chunked = logprobs_and_grads(model, 4, 0.7)
    assert all("lora" in n for n in full[2])  # only the adapters train
    assert_close(full, chunked)


def test_chunked_head_under_bf16_autocast():
    """bf16 autocast: the same matmul precision as the full path, float32 softmax; within the tolerances of
    tests/test_trainer_precision.py's bf16 test (here against the full path under the same autocast)."""
    model = tiny(tied=False)
    logp0, ent0, g0 = logprobs_and_grads(model, 0, 0.7, autocast=True)
    logp1, ent1, g1 = logprobs_and_grads(model, 5, 0.7, autocast=True)
    assert logp1.dtype == torch.float32
    assert torch.allclose(logp1, logp0, rtol=0.02, atol=1e-3) and torch.allclose(ent1, ent0, rtol=0.02, atol=1e-3)
    flat0, flat1 = torch.cat([g.flatten() for g in g0.values()]), torch.cat([g.flatten() for g in g1.values()])
    assert float((flat1 - flat0).norm() / flat0.norm()) < 0.1
    assert float(torch.nn.functional.cosine_similarity(flat0, flat1, dim=0)) > 0.99
    assert {g.dtype for g in g1.values()} == {torch.float32}


def test_head_logprobs_against_float64():
    """The Function itself, with a bias and uneven chunks, against the textbook formulas in float64."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (2, 9), generator=g)
    gl, ge = torch.randn(2, 9, generator=g, dtype=torch.float64), torch.randn(2, 9, generator=g, dtype=torch.float64)
    z = (h @ w.t() + b) / 0.6
    want_lp = z.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    want_h = -(z.softmax(-1) * z.log_softmax(-1)).sum(-1)
    want = torch.autograd.grad((want_lp * gl).sum() + (want_h * ge).sum(), [h, w, b])
    lp, ent = head_logprobs(h, w, y, 0.6, bias=b, chunk_size=4)
    got = torch.autograd.grad((lp.double() * gl).sum() + (ent.double() * ge).sum(), [h, w, b])
    assert torch.allclose(lp.double(), want_lp, atol=1e-5) and torch.allclose(ent.double(), want_h, atol=1e-5)
    for a, c in zip(want, got):
        assert torch.allclose(c.double(), a, rtol=1e-5, atol=1e-6)
    lp_only, none = head_logprobs(h, w, y, 0.6, bias=b, chunk_size=4, with_entropy=False)
    assert none is None and torch.equal(lp_only, lp)
    with pytest.raises(ValueError, match="chunk_size"):
        head_logprobs(h, w, y, chunk_size=0)


def test_unusable_head_falls_back_with_one_logged_reason(caplog):
    model = tiny(tied=False)
    model.config.final_logit_softcapping = 30.0  # Qwen2 ignores it; a Gemma-2 would cap its logits
    reason = output_head(model)
    assert isinstance(reason, str) and "final_logit_softcapping" in reason
    full = logprobs_and_grads(model, 0, 1.0)
    with caplog.at_level(logging.WARNING, logger="sfpo.policy"):
        fallback = logprobs_and_grads(model, 4, 1.0)
        logprobs_and_grads(model, 4, 1.0)
    assert [r.getMessage() for r in caplog.records if "full (B, T, V) logits" in r.getMessage()] == \
        [f"log-probs of Qwen2ForCausalLM use full (B, T, V) logits, not the chunked head: {reason}"]
    assert torch.equal(fallback[0], full[0]) and torch.equal(fallback[1], full[1])  # the same path, bit for bit
    model.config.final_logit_softcapping = None
    model.lm_head = torch.nn.Sequential(model.lm_head)
    assert "not a plain torch.nn.Linear" in output_head(model)
