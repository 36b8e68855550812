"""HFEngine, the reference engine: rollout layout (padding, EOS, truncation, texts) on a scripted LM whose outputs
are known in advance; the sampler's distribution (temperature, nucleus) on a constant LM; log-probs against the
training forward and seeding on the tiny Qwen2. The nucleus filter is checked against its definition."""

import pytest
import torch
from transformers import Qwen2Config

from sfpo.policy import sequence_logprobs
from sfpo.rollout import HFEngine, SamplingParams
from sfpo.rollout.hf import top_p_filter
from tiny import make_model, make_tokenizer

PROMPTS = ["1+2=", "12+34=", "123456789+1="]


class ScriptedLM(torch.nn.Module):
    """A causal LM whose next-token logits are ``rule(position_ids) -> (B, L, V)``; it ignores the cache."""

    def __init__(self, vocab_size, rule):
        super().__init__()
        self.config = Qwen2Config(vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1,
                                  num_attention_heads=1, num_key_value_heads=1)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the engine reads its device from the parameters
        self.rule = rule

    def forward(self, input_ids, attention_mask, position_ids, use_cache=True, logits_to_keep=None, **_):
        logits = self.rule(position_ids)
        return type("Out", (), {"logits": logits if logits_to_keep is None else logits[:, -logits_to_keep:]})


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def fives_then_eos(tok):
    """Emits '5' at every position but 7, where it emits EOS: a 4-token prompt gives '555<eos>', a 6-token one
    '5<eos>', a 12-token one (past position 7 already) '5' until max_new_tokens."""
    five, v = tok.convert_tokens_to_ids("5"), len(tok)

    def rule(pos):
        nxt = torch.where(pos + 1 == 7, tok.eos_token_id, five)  # the logits at position q choose token q + 1
        return 50.0 * torch.nn.functional.one_hot(nxt, v).float()

    return ScriptedLM(v, rule)


def test_rollout_layout_padding_eos_truncation_and_texts(tok, fives_then_eos):
    eng = HFEngine(fives_then_eos, tok)
    r = eng.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=0))
    five, eos, pad = tok.convert_tokens_to_ids("5"), tok.eos_token_id, tok.pad_token_id
    expected = [[five, five, five, eos, pad, pad], [five, eos, pad, pad, pad, pad], [five] * 6]
    assert r.completion_ids.tolist() == [row for row in expected for _ in range(2)]
    assert r.completion_mask.tolist() == [[int(t != pad) for t in row] for row in expected for _ in range(2)]
    assert r.truncated.tolist() == [False, False, False, False, True, True]
    assert r.texts == ["555", "555", "5", "5", "555555", "555555"]
    ids, mask = eng.encode_prompts(PROMPTS)
    assert torch.equal(r.prompt_ids, ids.repeat_interleave(2, 0))
    assert torch.equal(r.prompt_mask, mask.repeat_interleave(2, 0))
    assert mask.sum(-1).tolist() == [4, 6, 12] and (mask[:, -1] == 1).all()  # left-padded
    assert (ids[mask == 0] == pad).all()
    assert (r.sampling_logprobs[r.completion_mask == 0] == 0).all()
    assert r.sampling_logprobs[r.completion_mask == 1].abs().max() < 1e-6  # each scripted token has p ≈ 1
    assert r.num_tokens == 2 * (4 + 2 + 6)


def test_decoding_stops_once_every_row_has_eos(tok, fives_then_eos):
    r = HFEngine(fives_then_eos, tok).generate(PROMPTS[:2], SamplingParams(n=1, max_new_tokens=30, seed=0))
    assert r.completion_ids.shape == (2, 4) and not r.truncated.any()


def test_texts_drop_eos_and_sampled_pad(tok):
    """A pad token the model samples mid-completion is a real (masked-in) token, but not text."""
    seq = [tok.convert_tokens_to_ids("7"), tok.pad_token_id, tok.convert_tokens_to_ids("8"), tok.eos_token_id]
    v = len(tok)

    def rule(pos):
        step = (pos - 3).clamp(0, len(seq) - 1)  # "1+2=" ends at position 3
        return 50.0 * torch.nn.functional.one_hot(torch.tensor(seq)[step], v).float()

    r = HFEngine(ScriptedLM(v, rule), tok).generate(["1+2="], SamplingParams(max_new_tokens=8, seed=0))
    assert r.completion_ids.tolist() == [seq] and r.completion_mask.tolist() == [[1, 1, 1, 1]]
    assert r.texts == ["78"]


def test_generate_restores_training_mode(tok, fives_then_eos):
    fives_then_eos.train()
    HFEngine(fives_then_eos, tok).generate(["1="], SamplingParams(max_new_tokens=2, seed=0))
    assert fives_then_eos.training


def _constant_lm(tok, logits):
    return ScriptedLM(len(tok), lambda pos: logits.expand(*pos.shape, -1))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (1.0, 0.7), (0.5, 0.9)])
def test_sampler_draws_from_the_tempered_nucleus(tok, temperature, top_p):
    """Frequencies follow softmax(z / T) renormalised over the nucleus; log-probs are log softmax(z / T)."""
    g = torch.Generator().manual_seed(0)
    z = 2.0 * torch.randn(len(tok), generator=g)
    z[tok.eos_token_id] = -1e4  # one draw per row either way; keeps the test to the sampler
    r = HFEngine(_constant_lm(tok, z), tok).generate(["1"], SamplingParams(n=4000, max_new_tokens=1,
                                                                             temperature=temperature, top_p=top_p,
                                                                             seed=0))
    logp = torch.log_softmax(z / temperature, -1)
    kept = top_p_filter((z / temperature)[None], top_p)[0] > float("-inf")
    expected = torch.where(kept, logp.exp(), 0.0)
    expected = expected / expected.sum()
    freq = torch.bincount(r.completion_ids[:, 0], minlength=len(tok)).float() / 4000
    assert (freq[~kept] == 0).all()
    assert (freq - expected).abs().max() < 0.03  # 4000 draws: σ ≤ 0.008
    assert torch.allclose(r.sampling_logprobs[:, 0], logp[r.completion_ids[:, 0]], atol=1e-6)


@pytest.fixture(scope="module")
def policy():
    tok = make_tokenizer()
    model = make_model(tok, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # sharper than the near-uniform init, so samples and EOS vary
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model, tok


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)])
def test_sampling_logprobs_equal_the_training_forward(policy, temperature, top_p):
    model, tok = policy
    r = HFEngine(model, tok).generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, temperature=temperature,
                                                               top_p=top_p, seed=3))
    assert r.truncated.any() and not r.truncated.all()  # rows of different lengths share the batch
    with torch.no_grad():
        lp, _ = sequence_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                  temperature, with_entropy=False)
    assert ((lp - r.sampling_logprobs) * r.completion_mask).abs().max() < 1e-4


def test_same_seed_same_samples_other_seed_other_samples(policy):
    model, tok = policy
    eng = HFEngine(model, tok)
    a, b = (eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=10, seed=11)) for _ in range(2))
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.sampling_logprobs, b.sampling_logprobs)
    c = eng.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=10, seed=12))
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_top_p_filter_keeps_the_minimal_nucleus():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()[None]
    for top_p, kept in [(0.4, {1}), (0.7, {1, 3}), (0.9, {0, 1, 3}), (0.99, {0, 1, 2, 3})]:
        out = top_p_filter(logits, top_p)[0]
        assert {i for i in range(4) if out[i] > float("-inf")} == kept, top_p
        assert torch.equal(out[list(kept)], logits[0, list(kept)])  # kept logits are untouched
    assert top_p_filter(logits, 1.0) is logits


def test_top_p_filter_matches_its_definition_row_by_row():
    """Per row: the k most probable tokens, k the least with mass ≥ top_p (boundary ties excluded)."""
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(64, 50, generator=g)
    for top_p in (0.1, 0.5, 0.9):
        out = top_p_filter(logits, top_p)
        for row, filtered in zip(logits, out):
            p = torch.softmax(row.double(), -1)
            sorted_p, order = p.sort(descending=True)
            cum = sorted_p.cumsum(0)
            k = int((cum < top_p).sum()) + 1
            if (cum - top_p).abs().min() < 1e-5:
                continue
            assert set((filtered > float("-inf")).nonzero().flatten().tolist()) == set(order[:k].tolist())


def _sorted_top_p_filter(logits, top_p):
    """The full-vocabulary sort the engine used before: the reference the top-k search must reproduce."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@pytest.mark.parametrize("scale", [0.3, 3.0])  # 0.3: flat rows whose nucleus needs several top-k rounds
def test_top_p_filter_equals_the_full_sort(scale):
    """Bit for bit up to top_p 0.99. At 0.999 the cumulative mass crosses top_p in a long tail of ~1e-5 tokens and
    the two sum the softmax denominator in another order (sorted vs vocabulary order): a token whose mass before
    it lies within float32 rounding (1e-6 here) of top_p may then flip; any other difference fails."""
    g = torch.Generator().manual_seed(1)
    logits = scale * torch.randn(32, 5000, generator=g)
    for top_p in (0.1, 0.7, 0.95, 0.99):
        assert torch.equal(top_p_filter(logits, top_p), _sorted_top_p_filter(logits, top_p)), top_p
    new, old = top_p_filter(logits, 0.999) > float("-inf"), _sorted_top_p_filter(logits, 0.999) > float("-inf")
    p = torch.softmax(logits.double(), -1)
    for row in (new != old).any(-1).nonzero().flatten().tolist():
        for tok_id in (new[row] != old[row]).nonzero().flatten().tolist():
            mass_before = float(p[row][p[row] > p[row, tok_id]].sum())
            assert abs(mass_before - 0.999) < 1e-6, (row, tok_id, mass_before)


def test_top_p_samples_unchanged_for_a_fixed_seed(policy, monkeypatch):
    """The engine draws the same tokens with the top-k nucleus as with the full sort it replaced."""
    import sfpo.rollout.hf as hf

    model, tok = policy
    params = SamplingParams(n=8, temperature=0.7, top_p=0.8, max_new_tokens=12, seed=5)
    new = HFEngine(model, tok).generate(PROMPTS, params)
    monkeypatch.setattr(hf, "top_p_filter", _sorted_top_p_filter)
    old = HFEngine(model, tok).generate(PROMPTS, params)
    assert torch.equal(new.completion_ids, old.completion_ids)
    assert torch.equal(new.sampling_logprobs, old.sampling_logprobs)


def test_generation_config_eos_list_ends_a_response(tok, fives_then_eos):
    """An instruct model ends its turn with a token that is not the tokenizer's eos: '5' here."""
    from transformers import GenerationConfig

    five = tok.convert_tokens_to_ids("5")
    fives_then_eos.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, five])
    r = HFEngine(fives_then_eos, tok).generate(PROMPTS, SamplingParams(n=1, max_new_tokens=6, seed=0))
    assert r.completion_ids[:, 0].tolist() == [five] * 3 and r.completion_mask.sum(-1).tolist() == [1, 1, 1]
    assert r.truncated.tolist() == [False] * 3 and r.texts == ["", "", ""]


@pytest.mark.parametrize("bound", [{"max_batch_sequences": 5}, {"max_batch_sequences": 1},
                                   {"max_batch_tokens": 60}])
def test_chunked_generation_equals_one_batch(policy, bound):
    model, tok = policy
    params = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=3)
    one = HFEngine(model, tok, max_batch_sequences=10_000).generate(PROMPTS, params)
    eng = HFEngine(model, tok, **bound)
    assert eng._chunk_rows(12, one.prompt_ids.shape[1], params) < 12  # really more than one chunk
    cut = eng.generate(PROMPTS, params)
    assert torch.equal(one.completion_ids, cut.completion_ids) and one.texts == cut.texts
    assert torch.equal(one.completion_mask, cut.completion_mask)
    torch.testing.assert_close(one.sampling_logprobs, cut.sampling_logprobs, rtol=0, atol=1e-5)
    other = HFEngine(model, tok, max_batch_sequences=5).generate(PROMPTS, SamplingParams(
        n=4, top_p=0.9, max_new_tokens=10, seed=4))
    assert not torch.equal(one.completion_ids, other.completion_ids)


def test_max_prompt_tokens_keeps_the_end_of_the_prompt(policy):
    model, tok = policy
    ids, mask = HFEngine(model, tok, max_prompt_tokens=4).encode_prompts(PROMPTS)
    assert ids.shape[1] == 4 and tok.decode(ids[2]) == "89+1="[-4:]
