"""The testbed policy: the char tokenizer round-trips, the warm-start is deterministic, saves a folder that the
Auto classes load like any model, is reused from the cache, and never leaves a half-written one."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: the hub reads them at import
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

import sfpo.testbed as testbed
from sfpo.tasks import TASKS, get_task
from sfpo.tasks.base import Example
from sfpo.testbed import CHARS, build_tokenizer, cache_key, default_cache_dir, warm_start
from sfpo.testbed import testbed_config as make_config  # a name pytest would not collect as a test

TINY = dict(steps=2, batch_size=4, lr=1e-3, stop_at=None, seed=0, progress=False)


@pytest.fixture
def train_calls(monkeypatch):
    """Counts the trainings ``warm_start`` runs (as opposed to cache hits)."""
    calls = []
    real = testbed._train

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(testbed, "_train", counting)
    return calls


def test_tokenizer_covers_tasks_and_round_trips(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.padding_side == "left"
    assert len(tok) == len(CHARS) + 2
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.padding_side) == (0, 1, "left")
    for task in (get_task("arithmetic"), get_task("countdown"), get_task("arithmetic", ops="+-", terms=4)):
        for ex in task.examples("train", 50):
            assert set(ex.prompt + ex.solution) <= set(CHARS)
            ids = loaded(ex.prompt + ex.solution, add_special_tokens=False)["input_ids"]
            assert ids == tok(ex.prompt, add_special_tokens=False)["input_ids"] + \
                tok(ex.solution, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(ex.prompt + ex.solution)  # one token per character
            assert loaded.decode(ids) == ex.prompt + ex.solution
    rows = get_task("countdown").examples("train", 50)
    assert testbed._tokenize(tok, rows) == [  # the warm-start's fast path encodes exactly as the tokenizer does
        (tok(e.prompt + e.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], len(e.prompt))
        for e in rows]
    assert loaded.decode(tok("1 2", add_special_tokens=False)["input_ids"]) == "1 2"  # spaces survive
    assert loaded.decode([5, 6, 1, 0], skip_special_tokens=True) == tok.decode([5, 6])
    batch = loaded(["1+2=", "10+20="], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0][:2] == [0, 0] and batch["attention_mask"][0][:2] == [0, 0]  # padded on the left


def test_testbed_config_size():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(make_config(build_tokenizer()))
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
    assert model.config.tie_word_embeddings and next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"unknown testbed size 'huge'; sizes: \['small', 'tiny'\]"):
        make_config(build_tokenizer(), "huge")


def test_warm_start_saves_loads_caches_and_is_deterministic(tmp_path, train_calls):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    threads = torch.get_num_threads()
    a = warm_start("arithmetic", cache_dir=tmp_path / "a", **TINY)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG stream is left alone
    assert torch.get_num_threads() == threads
    b = warm_start("arithmetic", cache_dir=tmp_path / "b", **TINY)
    assert len(train_calls) == 2 and a.parent == tmp_path / "a" and a.name == b.name
    model_a = AutoModelForCausalLM.from_pretrained(a)
    model_b = AutoModelForCausalLM.from_pretrained(b)
    tok = AutoTokenizer.from_pretrained(a)
    assert tok.decode([2, 3]) == "01" and tok.eos_token_id == model_a.config.eos_token_id == 1
    for (n, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), n
    torch.manual_seed(TINY["seed"])
    fresh = AutoModelForCausalLM.from_config(make_config(build_tokenizer()))  # the same initial weights
    assert any(not torch.equal(p, q) for p, q in zip(model_a.parameters(), fresh.parameters()))  # it trained
    record = json.loads((a / "sfpo_testbed.json").read_text())
    assert record["settings"]["task"] == "arithmetic" and record["steps_trained"] == 2
    # the second call reuses the folder instead of training again
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert warm_start("arithmetic", cache_dir=tmp_path / "a", **TINY) == a
    assert len(train_calls) == 2 and (a / "model.safetensors").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [a.name]  # no temporary folder left behind


def test_cache_key_covers_every_setting(monkeypatch, tmp_path):
    base = dict(steps=600, batch_size=128, lr=1e-3, stop_at=0.3, seed=0, size="tiny")
    key = cache_key("arithmetic", {}, **base)
    changed = [cache_key("countdown", {}, **base), cache_key("arithmetic", {"digits": 3}, **base)]
    changed += [cache_key("arithmetic", {}, **{**base, k: v}) for k, v in
                dict(steps=601, batch_size=64, lr=2e-3, stop_at=None, seed=1, size="small").items()]
    assert len({key, *changed}) == len(changed) + 1
    monkeypatch.setitem(testbed.SIZES, "tiny", {**testbed.SIZES["tiny"], "num_hidden_layers": 2})
    assert cache_key("arithmetic", {}, **base) != key  # editing a size preset is a new entry too
    monkeypatch.setenv("SFPO_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "testbed"
    monkeypatch.delenv("SFPO_CACHE_DIR")
    assert default_cache_dir().parts[-3:] == (".cache", "sfpo", "testbed")


def test_interrupted_save_leaves_no_cache(tmp_path, monkeypatch):
    class Broken:
        def save_pretrained(self, path):
            path.mkdir(parents=True)
            (path / "config.json").write_text("{}")  # looks complete, but the weights never arrive
            raise KeyboardInterrupt

    monkeypatch.setattr(testbed, "_train", lambda *a, **k: (Broken(), {}))
    with pytest.raises(KeyboardInterrupt):
        warm_start("arithmetic", cache_dir=tmp_path, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_warm_start_rejects_tasks_it_cannot_learn(monkeypatch, tmp_path):
    class Words:
        name = "words"

        def __init__(self, solutions: bool = True):
            self.solutions = solutions

        def examples(self, split, n=None):
            return [Example("say hi:", "hi", "hi" if self.solutions else "")]

    monkeypatch.setitem(TASKS, "words", Words)
    with pytest.raises(ValueError, match=r"characters the testbed tokenizer lacks: \['a', 'h', 'i', 's', 'y'\]"):
        warm_start("words", cache_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="has no worked solutions"):
        warm_start("words", {"solutions": False}, cache_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="has 1 worked solutions .* more than the 256 it holds out"):
        warm_start("words", cache_dir=tmp_path, **{**TINY, "stop_at": 0.3})
    assert list(tmp_path.iterdir()) == []


def test_warm_start_stops_once_the_probe_reaches_stop_at(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(testbed._PROBE, "every", 2)
    monkeypatch.setitem(testbed._PROBE, "every_near", 1)
    monkeypatch.setitem(testbed._PROBE, "size", 8)
    done = warm_start("countdown", cache_dir=tmp_path, **{**TINY, "steps": 6, "stop_at": 0.0})
    record = json.loads((done / "sfpo_testbed.json").read_text())
    # stop_at=0 counts as near from the start, so the first probe comes after every_near steps and stops it
    assert (record["steps_trained"], record["stopped_early"], record["probe_pass1"]) == (1, True, 0.0)
    with caplog.at_level("WARNING", logger="sfpo.testbed"):
        never = warm_start("countdown", cache_dir=tmp_path, **{**TINY, "steps": 4, "stop_at": 1.01})
    record = json.loads((never / "sfpo_testbed.json").read_text())
    assert (record["steps_trained"], record["stopped_early"]) == (4, False)
    assert "below stop_at=1.01" in caplog.text
