"""The trainer's options for real models on one GPU, on a tiny model on CPU: bf16 autocast against fp32 (fp32
masters kept), activation checkpointing and token-budget micro-batches against the plain computation (same loss
and gradients), the padded-token count, the prompt-length policy."""

import pytest
import torch

from tiny import ToyTask, make_model, make_tokenizer
from sfpo.config import ConfigError, load_config
from sfpo.batching import Batch, layout, padding_metrics, token_budget_rows
from sfpo.trainer import Trainer

# first_pass() replaces optimizer.step to read the gradients, which torch notices at the scheduler step
pytestmark = pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")

BASE = ["rollout.num_prompts=4", "rollout.group_size=4", "rollout.max_new_tokens=6", "eval.every=0",
        "log.progress=false", "log.plot=false", "log.tensorboard=false", "optim.lr=1e-2", "optim.grad_clip=0",
        "algorithm.switch=never", "algorithm.name=grpo", "threads=1"]


class VaryingToyTask(ToyTask):
    """Prompts of very different lengths, so that bucketing has padding to remove, and a reward a random policy
    earns unevenly (the share of digits 1-4 in its response), so that every group has non-zero advantages."""

    def examples(self, split, n=None):
        out = super().examples(split, n)
        return [type(ex)(("1+" * (i % 5)) + ex.prompt, ex.answer, ex.solution, ex.id) for i, ex in enumerate(out)]

    def reward(self, completion, example):
        return sum(c in "1234" for c in completion) / max(len(completion), 1)


def trainer(tmp_path, overrides, name="run", task=None):
    cfg = load_config(None, BASE + [f"output_dir={tmp_path / name}"] + overrides)
    tok = make_tokenizer()
    model = make_model(tok, 0, hidden=32, layers=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # sharper than the init, so responses vary in length and rewards differ
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return Trainer(cfg, model=model, tokenizer=tok, task=task or VaryingToyTask())


def first_pass(t: Trainer):
    """(batch, loss, metrics, gradients) of the first optimizer step of step 0, with the step itself held back."""
    grads = []
    t.optimizer.step = lambda *a, **k: grads.append([p.grad.detach().clone() for p in t.params])
    metrics = t.train_step()
    assert metrics["frac_zero_std_groups"] < 1.0 and sum(float(g.norm()) for g in grads[0]) > 0  # not vacuous
    return metrics, grads[0]


def assert_grads_close(a, b, rtol, atol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def test_token_budget_rows_cover_every_row_once_within_budget():
    g = torch.Generator().manual_seed(0)
    p, t = torch.randint(1, 30, (40,), generator=g), torch.randint(1, 50, (40,), generator=g)
    groups = token_budget_rows(p, t, 200)
    assert sorted(torch.cat(groups).tolist()) == list(range(40))
    for grp in groups:
        assert len(grp) == 1 or len(grp) * int(p[grp].max() + t[grp].max()) <= 200
    assert len(token_budget_rows(p, t, 1)) == 40  # every row over budget: one each


def test_layout_covers_every_row_once_per_pass():
    g = torch.Generator().manual_seed(0)
    n, plen, tlen = 10, torch.randint(1, 6, (10,), generator=g), torch.randint(1, 9, (10,), generator=g)
    pmask = (torch.arange(6).flip(0) < plen[:, None]).long()  # left-padded prompts
    cmask = (torch.arange(9) < tlen[:, None]).long()
    batch = Batch(pmask, pmask, cmask, cmask, torch.zeros(n), cmask.float(), None)
    for minis, kw in ((2, {"micro_batch_size": 3}), (2, {"micro_batch_tokens": 20}), (3, {})):
        passes = layout(batch, minis, **kw)
        assert len(passes) == minis and passes[0][0].start == 0 and passes[-1][0].stop == n
        rows = [ms.start + int(i) for ms, _, micro in passes for sel in micro
                for i in torch.arange(ms.stop - ms.start)[sel]]
        assert sorted(rows) == list(range(n))  # every row once, inside its own mini-batch
        shapes = [(len(range(ms.stop - ms.start)[sel]) if isinstance(sel, slice) else len(sel),
                   mini.rows(sel).trimmed()) for ms, mini, micro in passes for sel in micro]
        if "micro_batch_size" in kw:
            assert [k for k, _ in shapes] == [3, 2, 3, 2]
        elif kw:  # packed: within the token budget, or a row alone
            assert all(k == 1 or k * (m.prompt_mask.shape[1] + m.completion_mask.shape[1]) <= 20 for k, m in shapes)
        else:
            assert [k for k, _ in shapes] == [3, 4, 3]  # one micro-batch per mini-batch
    whole = padding_metrics(layout(batch, 1))  # one micro-batch, trimmed to the longest prompt and response
    slots = n * (int(plen.max()) + int(tlen.max()))
    assert whole["padding/tokens"] == slots - int(plen.sum() + tlen.sum()) > 0
    assert padding_metrics(layout(batch, 1, micro_batch_size=1))["padding/tokens"] == 0  # each row trimmed to itself


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_token_budget_micro_batches_equal_one_batch(tmp_path, aggregation):
    """Same loss and gradient as the unbucketed mini-batch (the normaliser is the mini-batch's), less padding.
    Tolerance: float32 sums in another order, ~1e-6 relative."""
    agg = f"algorithm.aggregation={aggregation}"
    m1, g1 = first_pass(trainer(tmp_path, [agg], "one"))
    m2, g2 = first_pass(trainer(tmp_path, [agg, "optim.micro_batch_tokens=60"], "budget"))
    assert m1["reward"] == m2["reward"]  # the same rollout
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-5, abs=1e-7)
    assert_grads_close(g1, g2, rtol=1e-4, atol=1e-6)
    assert m2["padding/frac"] < m1["padding/frac"]  # bucketing removed padding
    assert m1["padding/frac"] > 0 and m2["padding/tokens"] < m1["padding/tokens"]
    assert m2["ratio/mean"] == pytest.approx(1.0, abs=1e-6)  # old log-probs on the same micro-batches


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    """Recomputing the activations is the same float32 arithmetic: the gradients agree to rounding (1e-6)."""
    m1, g1 = first_pass(trainer(tmp_path, [], "plain"))
    t = trainer(tmp_path, ["model.gradient_checkpointing=true"], "ckpt")
    assert any(getattr(m, "gradient_checkpointing", False) for m in t.model.modules())
    m2, g2 = first_pass(t)
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-6)
    assert_grads_close(g1, g2, rtol=1e-5, atol=1e-7)


def test_chunked_head_gives_the_full_logits_loss_and_gradients(tmp_path, monkeypatch):
    """The default (logits a chunk of tokens at a time, recomputed in the backward) against model.head_chunk_tokens=0
    (the model's full logits): the same loss and gradients to float32 rounding, ratios 1 at θ0, and the old,
    reference and training log-probs all went through the chunked head."""
    import sfpo.policy

    calls = []
    real = sfpo.policy.head_logprobs
    monkeypatch.setattr(sfpo.policy, "head_logprobs", lambda *a, **k: calls.append(k["chunk_size"]) or real(*a, **k))
    # two mini-batches: the old log-probs get their own forward (with one, the first pass's forward gives them)
    common = ["algorithm.kl_coef=0.1", "optim.micro_batch_size=8", "optim.mini_batches=2"]
    m0, g0 = first_pass(trainer(tmp_path, common + ["model.head_chunk_tokens=0"], "full"))
    assert calls == []
    m1, g1 = first_pass(trainer(tmp_path, common + ["model.head_chunk_tokens=5"], "chunked"))
    assert calls == [5] * 6  # old and reference log-probs, then the pass: 2 micro-batches each
    assert m1["reward"] == m0["reward"]  # the same rollout
    assert m1["ratio/mean"] == pytest.approx(1.0, abs=1e-6) and m1["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m1["loss"] == pytest.approx(m0["loss"], rel=1e-6, abs=1e-8)
    assert m1["entropy"] == pytest.approx(m0["entropy"], rel=1e-6)
    scale = max(float(g.abs().max()) for g in g0)  # float32 rounding at the largest gradient reaches every tensor
    assert_grads_close(g0, g1, rtol=0, atol=1e-6 * scale)


def test_bf16_autocast_close_to_fp32_and_keeps_fp32_masters(tmp_path):
    """bf16 autocast: the loss within 2% and the gradient within 10% of fp32's (bf16 keeps 8 bits of mantissa:
    ~0.4% per rounding, accumulated over the layers), ratios 1 at θ0, and everything the optimizer and SFPO
    hold stays float32."""
    t32 = trainer(tmp_path, ["algorithm.name=sfpo", "algorithm.inner_steps=1"], "fp32")
    tbf = trainer(tmp_path, ["algorithm.name=sfpo", "algorithm.inner_steps=1", "model.mixed_precision=bf16"], "bf16")
    assert tbf.engine.autocast_dtype is torch.bfloat16  # sampling in the same precision
    # the same rollout: compare the loss on one fixed batch
    m32, g32 = first_pass(t32)
    mbf, gbf = first_pass(tbf)
    assert mbf["ratio/mean"] == pytest.approx(1.0, abs=1e-6) and mbf["clip_ratio/region_mean"] == 0.0
    assert mbf["loss"] == pytest.approx(m32["loss"], rel=0.02, abs=1e-3)
    flat32, flatbf = torch.cat([g.flatten() for g in g32]), torch.cat([g.flatten() for g in gbf])
    assert float((flatbf - flat32).norm() / flat32.norm()) < 0.1
    assert float(torch.nn.functional.cosine_similarity(flat32, flatbf, dim=0)) > 0.99
    # a full SFPO step: weights, gradients, AdamW moments and the anchor all float32
    tbf2 = trainer(tmp_path, ["algorithm.name=sfpo", "algorithm.inner_steps=1", "model.mixed_precision=bf16"], "b2")
    tbf2.train_step()
    assert {p.dtype for p in tbf2.params} == {torch.float32}
    assert {p.grad.dtype for p in tbf2.params if p.grad is not None} <= {torch.float32}
    assert {v.dtype for st in tbf2.optimizer.state.values() for k, v in st.items() if k != "step"} == {torch.float32}
    anchor = [v for v in tbf2.update.state_dict().values() if torch.is_tensor(v)]
    assert all(a.dtype == torch.float32 for a in anchor)


def test_bf16_needs_float32_weights(tmp_path):
    cfg = load_config(None, BASE + [f"output_dir={tmp_path}", "model.mixed_precision=bf16"])
    tok = make_tokenizer()
    with pytest.raises(ConfigError, match="float32 master weights"):
        Trainer(cfg, model=make_model(tok).to(torch.bfloat16), tokenizer=tok, task=ToyTask())


def test_long_prompts_skip_and_cut(tmp_path, caplog):
    task = VaryingToyTask()
    lengths = [len(ex.prompt) for ex in task.examples("train")]  # the char tokenizer: one token per character
    limit = 8
    with caplog.at_level("WARNING", logger="sfpo.trainer"):
        t = trainer(tmp_path, [f"rollout.max_prompt_tokens={limit}"], "skip", task)
    assert len(t.train_examples) == sum(n <= limit for n in lengths) < len(lengths)
    assert all(len(ex.prompt) <= limit for ex in t.train_examples + t.val_examples)
    assert f"{sum(n > limit for n in lengths)} of {len(lengths)} train prompts" in caplog.text
    t = trainer(tmp_path, [f"rollout.max_prompt_tokens={limit}", "rollout.long_prompts=cut"], "cut", task)
    assert len(t.train_examples) == len(lengths)
    m = t.train_step()
    want = sum(len(ex.prompt) > limit for ex in t._step_examples(0))
    assert m["prompts_cut"] == want
    cfg = load_config(None, BASE + [f"output_dir={tmp_path}", "rollout.max_prompt_tokens=8",
                                    "rollout.long_prompts=cut", "rollout.engine=vllm"])
    tok = make_tokenizer()
    with pytest.raises(ConfigError, match="long_prompts=cut needs the hf engine"):
        Trainer(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask())


@pytest.mark.parametrize("overrides, native, warns", [
    (["model.mixed_precision=bf16"], False, True),
    (["model.mixed_precision=bf16"], True, False),   # AVX512-BF16 / AMX: bf16 kernels exist
    (["model.mixed_precision=bf16"], None, False),   # cannot tell: no warning on a guess
    ([], False, False),                              # fp32 on the same CPU
])
def test_bf16_on_a_cpu_without_bf16_kernels_warns_with_the_alternative(tmp_path, monkeypatch, caplog, overrides,
                                                                        native, warns):
    import sfpo.policy

    monkeypatch.setattr(sfpo.policy, "cpu_has_native_bf16", lambda: native)
    cfg = load_config(None, ["log.progress=false", "log.tensorboard=false", "model.device=cpu",
                             f"output_dir={tmp_path / 'run'}", *overrides])
    tok = make_tokenizer()
    with caplog.at_level("WARNING", logger="sfpo.policy"):
        Trainer(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask()).run_lock.release()
    said = [r.getMessage() for r in caplog.records if "without native bf16 kernels" in r.getMessage()]
    assert len(said) == warns
    if warns:
        assert "model.mixed_precision=none" in said[0] and "100x slower" in said[0]


def test_bfloat16_weights_warn_too(monkeypatch, caplog):
    import sfpo.policy
    from sfpo.config import ModelConfig

    monkeypatch.setattr(sfpo.policy, "cpu_has_native_bf16", lambda: False)
    model = make_model(make_tokenizer()).to(torch.bfloat16)
    assert sfpo.policy.warn_if_slow_bf16(model, ModelConfig(dtype="bfloat16"))
    assert "bfloat16 weights" in caplog.text


@pytest.mark.parametrize("algorithm", [["algorithm.name=grpo"], ["algorithm.name=sfpo", "algorithm.inner_steps=2"]])
def test_old_logprobs_from_the_first_pass_give_the_same_step(tmp_path, monkeypatch, algorithm):
    """With one optimizer step per pass, the first pass's own forward (at θ0) gives the old log-probs: no separate
    forward, ratios exactly 1 in that pass, and the weights after the step those of the separate forward to float32
    rounding. AdamW's ε is 1 here so that an update is proportional to its gradient: with ε = 1e-8 a gradient that
    is rounding noise (k_proj's bias has a true gradient of 0) moves its weight by ±lr either way."""
    common = algorithm + ["optim.micro_batch_size=6", "optim.eps=1.0", "algorithm.switch=never"]
    handed = trainer(tmp_path, common, "handover")
    assert handed._old_from_first_pass()
    seen = []
    real = Trainer._one_pass

    def spy(self, batch, log, fill_old=False):
        out = real(self, batch, log, fill_old)
        seen.append((fill_old, out["ratio/mean"], batch.old_logprobs.clone()))
        return out

    monkeypatch.setattr(Trainer, "_one_pass", spy)
    m1 = handed.train_step()
    passes = 1 if algorithm == ["algorithm.name=grpo"] else 3
    assert [f for f, _, _ in seen] == [True] + [False] * (passes - 1)
    assert seen[0][1] == 1.0  # exactly: exp(logp - logp.detach())
    handed_old = seen[0][2]
    seen.clear()
    monkeypatch.setattr(Trainer, "_old_from_first_pass", lambda self: False)
    separate = trainer(tmp_path, common, "separate")
    m0 = separate.train_step()
    assert [f for f, _, _ in seen] == [False] * passes
    assert m1["reward"] == m0["reward"]  # the same rollout
    torch.testing.assert_close(handed_old, seen[0][2], rtol=0, atol=1e-6)  # θ0's log-probs, either way
    assert m1["time/old_logprobs"] < m0["time/old_logprobs"]
    for a, b in zip(handed.params, separate.params):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(handed.params, trainer(tmp_path, common, "init").params))


@pytest.mark.parametrize("overrides", [["optim.mini_batches=2"], ["rollout.old_logprobs=sampling"]])
def test_old_logprobs_keep_their_own_forward_when_the_first_pass_is_not_exact(tmp_path, overrides):
    assert not trainer(tmp_path, overrides, "t")._old_from_first_pass()


def test_dropout_keeps_the_separate_forward(tmp_path):
    t = trainer(tmp_path, [], "t")
    assert t._old_from_first_pass()
    t.model.config.attention_dropout = 0.1  # a training-mode forward would sample masks
    assert not t._old_from_first_pass()
    t.model.config.attention_dropout = 0.0
    t.model.model.layers[0].mlp.add_module("drop", torch.nn.Dropout(0.1))
    assert not t._old_from_first_pass()
