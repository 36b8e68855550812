"""The testbed policies that ship with the package: their files match SHA256SUMS and the hashes written here,
`sfpo demo` and the reproduction harness start from them without training, and the weights they load are
bit-identical to what was shipped — on whatever CPU this runs (a CI machine with another instruction set
would warm-start other bits; it must not need to)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest

import sfpo.testbed as testbed
from sfpo.config import load_config
from sfpo.testbed import SHIPPED_DIR, file_sha256, shipped_sums, warm_start, weights_sha256

ROOT = Path(__file__).resolve().parents[1]
# sha256 of model.safetensors and of the loaded state dict (sfpo.testbed.weights_sha256); rebuild and compare
# with `python -m sfpo.testbed` (docs/reproduction.md, "Same bits on every machine")
SHIPPED = {
    "arithmetic": ("8bfb6e0e174d76013eb8592728a74afd4c464ac137e535454eba63a31378b6b4",
                   "6c36705f830ba4a550906b96b0a00c406327423e6e9c0ce4f247336826443c65"),
    "countdown": ("5f8203f1fab7e445c2695634ebe0f076223f8361fbc12b3bf2f7d7fa446f139e",
                  "e0824bbda05f04031f5fc4838464e33705bef8643b6508df68211431fb938b20"),
}


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("warm_start trained instead of returning the shipped policy")

    monkeypatch.setattr(testbed, "_train", fail)


def test_shipped_files_match_sha256sums():
    sums = shipped_sums()
    files = sorted(str(p.relative_to(SHIPPED_DIR)) for p in SHIPPED_DIR.glob("*/*"))
    assert files == sorted(sums) and len(files) >= 2 * 4  # weights, config, tokenizer, record per policy
    for rel, digest in sums.items():
        assert file_sha256(SHIPPED_DIR / rel) == digest, rel
    weights = {rel.split("-", 1)[0]: d for rel, d in sums.items() if rel.endswith("/model.safetensors")}
    assert weights == {task: h[0] for task, h in SHIPPED.items()}


@pytest.mark.parametrize("config, task", [("demo.yaml", "arithmetic"), ("reproduce.yaml", "arithmetic"),
                                          ("reproduce.yaml", "countdown")])
def test_demo_and_harness_start_from_the_shipped_bits(config, task, no_training, monkeypatch, tmp_path):
    from sfpo.policy import load_policy

    monkeypatch.setenv("SFPO_CACHE_DIR", str(tmp_path))  # an empty cache: only the shipped folder can answer
    for knob in testbed.KERNEL_KNOBS:
        monkeypatch.delenv(knob, raising=False)
    cfg = load_config(ROOT / "configs" / config, [f"task.name={task}"])
    path = warm_start(cfg.task.name, cfg.task.kwargs, seed=cfg.model.warmup_seed, size=cfg.model.testbed_size)
    assert path.parent == SHIPPED_DIR and file_sha256(path / "model.safetensors") == SHIPPED[task][0]
    model, tokenizer = load_policy(cfg.model, cfg.task.name, cfg.task.kwargs)
    assert weights_sha256(model) == SHIPPED[task][1]
    assert tokenizer.decode([2, 3]) == "01" and not list(tmp_path.iterdir())


def test_other_settings_still_train_and_a_kernel_pin_is_a_different_policy(monkeypatch):
    key = testbed.cache_key("arithmetic", {}, steps=1500, batch_size=128, lr=1e-3, stop_at=0.3, seed=0, size="tiny")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    pinned = testbed.cache_key("arithmetic", {}, steps=1500, batch_size=128, lr=1e-3, stop_at=0.3, seed=0,
                               size="tiny")
    assert pinned != key and '"kernels": {"ATEN_CPU_CAPABILITY": "default"}' in pinned
