"""End-to-end CPU runs of the trainer on a tiny model: every parameter moves, keys are logged, runs are
deterministic and resume exactly, bad input gets one clear error or a logged skip."""

import json
import math

import pytest
import torch

from tiny import ToyTask, make_model, make_tokenizer
from sfpo.config import load_config
from sfpo.trainer import RewardError, Trainer

BASE = ["rollout.num_prompts=4", "rollout.group_size=4", "rollout.max_new_tokens=4", "eval.every=2",
        "eval.num_prompts=4", "eval.k=2", "log.progress=false", "log.plot=false", "log.tensorboard=false",
        "optim.lr=1e-2", "optim.mini_batches=2", "algorithm.switch=never", "threads=1"]


def run(tmp_path, overrides, steps=3, task=None, seed_model=0, name="run"):
    cfg = load_config(None, BASE + [f"steps={steps}", f"output_dir={tmp_path / name}"] + overrides)
    tok = make_tokenizer()
    trainer = Trainer(cfg, model=make_model(tok, seed_model), tokenizer=tok, task=task or ToyTask())
    summary = trainer.train()
    records = [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return trainer, summary, records


def _strip_times(records):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


@pytest.mark.parametrize("algo", [["algorithm.name=grpo"], ["algorithm.name=sfpo", "algorithm.inner_steps=2"]])
def test_three_steps_move_every_parameter_and_log_keys(tmp_path, algo):
    tok = make_tokenizer()
    before = {n: p.detach().clone() for n, p in make_model(tok).named_parameters()}
    trainer, summary, records = run(tmp_path, algo)
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p.detach(), before[n])]
    # k_proj biases shift every attention logit of a query equally, so softmax makes their gradient exactly 0
    assert [n for n in unchanged if not n.endswith("k_proj.bias")] == []
    assert summary["steps"] == 3 and summary["rollouts"] == 3 * 16
    step = records[1]
    for key in ["reward", "reward_std", "entropy", "clip_ratio/low", "clip_ratio/high", "loss", "grad_norm",
                "rollouts", "time/rollout", "time/reward", "time/update", "time/step", "time/train_elapsed"]:
        assert key in step, key
    assert "val/accuracy" in records[0] and "val/accuracy" in records[2]
    if "algorithm.name=sfpo" in algo:
        for key in ["sfpo/drift_norm", "sfpo/reposition_norm", "sfpo/loss_first_fast", "sfpo/loss_last_fast",
                    "sfpo/loss_slow", "sfpo/active", "time/fast", "time/reposition", "time/slow"]:
            assert key in step, key
        assert step["sfpo/drift_norm"] > 0 and step["sfpo/active"] == 1.0
    else:
        assert not any(k.startswith("sfpo/") for k in step)


@pytest.mark.parametrize("algo", ["grpo", "sfpo"])
def test_same_seed_same_metrics(tmp_path, algo):
    _, _, a = run(tmp_path, [f"algorithm.name={algo}"], name="a")
    _, _, b = run(tmp_path, [f"algorithm.name={algo}"], name="b")
    assert _strip_times(a) == _strip_times(b)
    _, _, c = run(tmp_path, [f"algorithm.name={algo}", "seed=1"], name="c")
    assert _strip_times(a) != _strip_times(c)


@pytest.mark.parametrize("algo", [["algorithm.name=grpo", "algorithm.passes=2"],
                                  ["algorithm.name=sfpo", "algorithm.switch=entropy", "algorithm.switch_window=2",
                                   "algorithm.switch_threshold=0.5", "optim.warmup_steps=3"],
                                  ["algorithm.name=sfpo", "algorithm.switch=never", "algorithm.outer_momentum=0.5"]],
                         ids=["grpo", "sfpo", "sfpo-momentum"])
def test_resume_equals_uninterrupted(tmp_path, algo):
    full, _, full_rec = run(tmp_path, algo, steps=4, name="full")
    run(tmp_path, algo + ["checkpoint_every=2"], steps=2, name="split")
    resumed, _, split_rec = run(tmp_path, algo, steps=4, name="split")
    assert resumed.step == 4
    for (n, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n
    assert _strip_times(full_rec) == _strip_times(split_rec)
    assert resumed.switch.state_dict() == full.switch.state_dict()


def test_the_step_where_the_switch_fires_says_it_ran_sfpo(tmp_path):
    """`sfpo/active` is what the step did, `sfpo/switch_on` what the switch decided for the next ones: on the step
    where the switch fires they differ (the switch used to overwrite the first with the second)."""
    _, _, rec = run(tmp_path, ["algorithm.name=sfpo", "algorithm.switch=fixed_step", "algorithm.switch_stop_step=2"])
    steps = [r for r in rec if "sfpo/active" in r]
    assert [(r["sfpo/active"], r["sfpo/switch_on"]) for r in steps] == [(1.0, 1.0), (1.0, 0.0), (0.0, 0.0)]
    assert steps[1]["sfpo/alpha"] == 0.8 and steps[2]["sfpo/alpha"] == 0.0


def test_outer_momentum_acts_and_is_logged(tmp_path):
    """μ > 0 changes the trajectory from plain SFPO's, and the log shows it act: m is the first step's drift, and
    the reposition is α(1 + μ) times the drift on the first step (m = D), longer than plain SFPO's α times."""
    s, _, srec = run(tmp_path, ["algorithm.name=sfpo", "algorithm.switch=never"], name="s")
    m, _, mrec = run(tmp_path, ["algorithm.name=sfpo", "algorithm.switch=never", "algorithm.outer_momentum=0.5"],
                     name="m")
    steps = [r for r in mrec if "sfpo/momentum_norm" in r]
    assert len(steps) == 3 and "sfpo/momentum_norm" not in str(srec)
    first = steps[0]
    assert first["sfpo/momentum_norm"] == pytest.approx(first["sfpo/drift_norm"], rel=1e-5)
    assert first["sfpo/reposition_norm"] == pytest.approx(0.8 * 1.5 * first["sfpo/drift_norm"], rel=1e-5)
    assert any(not torch.equal(p, q) for p, q in zip(s.model.parameters(), m.model.parameters()))


def test_sfpo_alpha_zero_is_grpo(tmp_path):
    g, _, grec = run(tmp_path, ["algorithm.name=grpo"], name="g")
    s, _, srec = run(tmp_path, ["algorithm.name=sfpo", "algorithm.alpha=0"], name="s")
    for p, q in zip(g.model.parameters(), s.model.parameters()):
        assert torch.equal(p, q)
    assert [r.get("reward") for r in grec] == [r.get("reward") for r in srec]


def test_grpo_passes_equals_sfpo_alpha_one(tmp_path):
    g, _, _ = run(tmp_path, ["algorithm.name=grpo", "algorithm.passes=3"], name="g")
    s, _, _ = run(tmp_path, ["algorithm.name=sfpo", "algorithm.alpha=1", "algorithm.inner_steps=2"], name="s")
    for p, q in zip(g.model.parameters(), s.model.parameters()):
        assert torch.equal(p, q)


class RaisingTask(ToyTask):
    def reward(self, completion, example):
        raise ZeroDivisionError("verifier bug")


def test_reward_that_raises_is_one_clear_error(tmp_path):
    with pytest.raises(RewardError, match=r"ZeroDivisionError: verifier bug \(example id='validation-0'"):
        run(tmp_path, ["algorithm.name=grpo"], task=RaisingTask())


def test_reward_errors_zero_keeps_training(tmp_path, caplog):
    _, summary, records = run(tmp_path, ["algorithm.name=grpo", "task.reward_errors=zero"], task=RaisingTask())
    assert summary["steps"] == 3 and records[1]["reward"] == 0.0
    assert "verifier bug" in caplog.text


class NaNTask(ToyTask):
    def reward(self, completion, example):
        return math.nan


@pytest.mark.parametrize("algo", ["grpo", "sfpo"])
def test_nan_loss_is_skipped_with_weights_restored(tmp_path, algo, caplog):
    tok = make_tokenizer()
    start = [p.detach().clone() for p in make_model(tok).parameters()]
    trainer, summary, records = run(tmp_path, [f"algorithm.name={algo}"], task=NaNTask())
    assert summary["nan_skips"] == 3 and records[1]["nan_skip"] == 1.0
    for p, q in zip(trainer.model.parameters(), start):
        assert torch.equal(p.detach(), q)
    assert "restored to θ0" in caplog.text


def test_metrics_survive_and_do_not_duplicate_on_resume(tmp_path):
    run(tmp_path, ["algorithm.name=grpo", "checkpoint_every=2"], steps=3, name="r")
    _, _, rec = run(tmp_path, ["algorithm.name=grpo"], steps=4, name="r")
    assert [r["step"] for r in rec] == [0, 1, 2, 3, 4]


def test_lora_anchor_holds_adapters_only_and_base_is_frozen(tmp_path):
    tok = make_tokenizer()
    base = {n: p.detach().clone() for n, p in make_model(tok).named_parameters()}
    lora = ["model.lora_rank=4", "model.lora_target_modules=[q_proj,v_proj]"]
    trainer, _, _ = run(tmp_path, ["algorithm.name=sfpo"] + lora, steps=2)
    named = dict(trainer.model.named_parameters())
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainer.update.params) == len(trainable)
    adapter_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    assert trainer.update.extra_bytes() == adapter_bytes
    for n, p in named.items():  # the base weights never move
        if not p.requires_grad:
            key = n.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), base[key]), n
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in trainable.items() if "lora_B" in n)
    # resume from an adapter checkpoint reproduces the uninterrupted run
    full, _, _ = run(tmp_path, ["algorithm.name=sfpo"] + lora, steps=4, name="full")
    run(tmp_path, ["algorithm.name=sfpo", "checkpoint_every=2"] + lora, steps=2, name="split")
    resumed, _, _ = run(tmp_path, ["algorithm.name=sfpo"] + lora, steps=4, name="split")
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def test_kl_to_reference_is_logged_and_reference_stays_frozen(tmp_path):
    trainer, _, records = run(tmp_path, ["algorithm.name=sfpo", "algorithm.kl_coef=0.1"])
    assert math.isfinite(records[1]["kl"]) and records[1]["kl"] >= 0.0  # k3 is non-negative
    assert records[-1]["kl"] > 0  # the policy moved away from the reference
    tok = make_tokenizer()
    for p, q in zip(trainer.ref_model.parameters(), make_model(tok).parameters()):
        assert torch.equal(p, q) and not p.requires_grad


def test_tensorboard_events_and_plot_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    run(tmp_path, ["algorithm.name=grpo", "log.tensorboard=true", "log.plot=true"])
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    png = tmp_path / "run" / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["peak_rss_mb"] > 0


def test_engine_weights_are_synced_once_per_step_before_generation(tmp_path):
    """A separate engine (vLLM) samples from stale weights unless the trainer syncs it; fast passes never do."""
    calls = []

    class Recorder:
        def __init__(self, engine, trainer):
            self.engine, self.trainer = engine, trainer

        def sync_weights(self, model):
            calls.append(("sync", self.trainer.update.phase))

        def generate(self, prompts, params):
            calls.append(("generate", None))
            return self.engine.generate(prompts, params)

    cfg = load_config(None, BASE + ["steps=2", f"output_dir={tmp_path / 'r'}", "algorithm.name=sfpo",
                                    "eval.every=0"])
    tok = make_tokenizer()
    trainer = Trainer(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask())
    trainer.engine = Recorder(trainer.engine, trainer)
    trainer.train()
    assert calls == [("sync", "idle"), ("generate", None)] * 2


def test_fresh_start_moves_lines_of_a_run_without_checkpoint_aside(tmp_path):
    run(tmp_path, ["algorithm.name=grpo", "resume=false"], steps=2, name="r")
    _, _, rec = run(tmp_path, ["algorithm.name=grpo"], steps=2, name="r")  # no checkpoint_every: only the end one
    assert [r["step"] for r in rec] == [0, 1, 2]
    import shutil
    shutil.rmtree(tmp_path / "r" / "checkpoints")  # as if killed before the first checkpoint
    _, _, rec = run(tmp_path, ["algorithm.name=grpo"], steps=2, name="r")
    assert [r["step"] for r in rec] == [0, 1, 2]
    assert len(list((tmp_path / "r").glob("metrics.*.jsonl.bak"))) == 1


def test_final_test_reloads_the_final_weights_without_a_copy_in_memory(tmp_path, monkeypatch):
    """The final test scores best/ and then puts the final weights back from their checkpoint: no deep copy of the
    state dict, the model ends bit for bit on the final weights, and the peak memory is read after the test."""
    import copy

    import sfpo.trainer as trainer_mod

    calls = []
    real = trainer_mod.Trainer._peak_memory
    monkeypatch.setattr(trainer_mod.Trainer, "_peak_memory", lambda self: calls.append(1) or real(self))

    def no_deepcopy(*a, **k):
        raise AssertionError("the final test copied the weights")

    trainer, summary, _ = run(tmp_path, ["algorithm.name=grpo", "eval.test_num_prompts=4"], steps=2)
    final = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    ckpt = trainer.save_checkpoint()
    monkeypatch.setattr(copy, "deepcopy", no_deepcopy)
    monkeypatch.setattr(torch.nn.Module, "state_dict", no_deepcopy)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)  # the weights best/ or anything else could leave behind
    out = trainer._test(ckpt)
    assert set(out) == {"test/final_accuracy", "test/best_accuracy"}
    assert all(torch.equal(p.detach(), final[n]) for n, p in trainer.model.named_parameters())
    assert "test/best_accuracy" in summary and len(calls) == 2  # once in the summary, once after the test
