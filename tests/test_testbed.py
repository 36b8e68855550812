"""The testbed policy: the char tokenizer round-trips, the warm-start is deterministic, saves a folder that the
Auto classes load like any model, and is reused from the cache."""

import torch

from sfpo.tasks import get_task
from sfpo.testbed import CHARS, build_tokenizer, model_config, warm_start


def test_tokenizer_covers_tasks_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.padding_side == "left"
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for name in ("arithmetic", "countdown"):
        for ex in get_task(name).examples("train", 50):
            assert set(ex.prompt + ex.solution) <= set(CHARS)
            ids = loaded(ex.prompt + ex.solution, add_special_tokens=False)["input_ids"]
            assert ids == tok(ex.prompt, add_special_tokens=False)["input_ids"] + \
                tok(ex.solution, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(ex.prompt + ex.solution)  # one token per character
            assert loaded.decode(ids) == ex.prompt + ex.solution
    assert loaded.decode([5, 6, 1, 0], skip_special_tokens=True) == tok.decode([5, 6])


def test_model_config_size():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(model_config(build_tokenizer()))
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6


def test_warm_start_saves_loads_caches_and_is_deterministic(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(steps=3, batch_size=8, lr=1e-3, seed=0, progress=False)
    a = warm_start("arithmetic", cache=tmp_path / "a", **kw)
    b = warm_start("arithmetic", cache=tmp_path / "b", **kw)
    model_a = AutoModelForCausalLM.from_pretrained(a)
    model_b = AutoModelForCausalLM.from_pretrained(b)
    assert AutoTokenizer.from_pretrained(a).decode([2, 3]) == "01"
    fresh = AutoModelForCausalLM.from_config(model_config(build_tokenizer()))
    for (n, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), n
    assert any(not torch.equal(p, q) for p, q in zip(model_a.parameters(), fresh.parameters()))
    # the second call reuses the folder instead of training again
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    import sfpo.tasks as tasks

    monkeypatch.setattr(tasks, "get_task", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert warm_start("arithmetic", cache=tmp_path / "a", **kw) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
    assert not list((tmp_path / "a").glob("*.tmp*"))  # no half-written cache left behind
    # a different setting is a different cache entry
    monkeypatch.undo()
    c = warm_start("arithmetic", cache=tmp_path / "a", **{**kw, "seed": 1})
    assert c != a
