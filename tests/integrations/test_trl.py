"""SFPOTrainer against TRL's own GRPOTrainer on a tiny CPU model: the off settings are bit-identical to GRPO, the
cycle runs in the paper's order with one generation per training step, the switch gives one pass and new prompts
per batch, the LR is held per training step, a resume inside a step is exact, and LoRA anchors adapters only."""

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer, _StepSampler  # noqa: E402
from tiny_trl import SMALL, make_model, make_tokenizer, train, weights  # noqa: E402


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    diffs = {n: (a[n] - b[n]).abs().max().item() for n in a if not torch.equal(a[n], b[n])}
    assert diffs == {}


class Recorder(TrainerCallback):
    """Optimizer steps as events; the trainer subclass below adds snapshot / generate / reposition."""

    def __init__(self, events):
        self.events = events

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.events.append("opt")


class RecordingTrainer(SFPOTrainer):
    events: list = []
    prompts: list = []
    old_logps_present: list = []

    def _generate_and_score_completions(self, inputs):
        self.events.append("generate")
        self.prompts.append(sorted({row["prompt"] for row in inputs}))
        out = super()._generate_and_score_completions(inputs)
        self.old_logps_present.append(out.get("old_per_token_logps") is not None)
        return out

    def _slow_fast(self):
        fresh = self.sfpo is None
        update = super()._slow_fast()
        if fresh:
            for name in ("_snapshot", "reposition"):
                method = getattr(update, name)

                def wrapped(*a, _m=method, _n=name.strip("_"), **k):
                    self.events.append(_n)
                    return _m(*a, **k)

                setattr(update, name, wrapped)
        return update


def recording_run(tmp_path, **overrides):
    RecordingTrainer.events, RecordingTrainer.prompts, RecordingTrainer.old_logps_present = [], [], []
    trainer = train(RecordingTrainer, SFPOConfig, tmp_path, callbacks=[Recorder(RecordingTrainer.events)],
                    **overrides)
    return trainer, RecordingTrainer.events


# ------------------------------------------------------------------------------------------------ config
def test_config_sets_passes_per_generation_batch(tmp_path):
    base = dict(SMALL, output_dir=str(tmp_path))
    assert SFPOConfig(**base, inner_steps=3).num_iterations == 4
    assert SFPOConfig(**base, inner_steps=3, num_iterations=1).num_iterations == 4  # μ=1 of the base update
    assert SFPOConfig(**base, alpha=0.0).num_iterations == 1
    assert SFPOConfig(**base, inner_steps=0).num_iterations == 1


@pytest.mark.parametrize("overrides, message", [
    (dict(num_iterations=2), "passes over each generation batch"),
    (dict(alpha=0.0, num_iterations=4), "one plain GRPO pass"),
    (dict(steps_per_generation=3), "must be a multiple of gradient_accumulation_steps"),
    (dict(dataloader_num_workers=2), "dataloader_num_workers=2"),
    (dict(switch="fixed_step"), "needs switch_stop_step"),
    (dict(alpha=2.5), "alpha must lie in"),
    (dict(outer_momentum=1.5), "outer_momentum must lie in"),
    (dict(optimizer_state="keep"), "optimizer_state must be one of"),
    (dict(lr_stepping="epoch"), "lr_stepping must be one of"),
])
def test_config_explains_illegal_combinations(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        SFPOConfig(**{**SMALL, "output_dir": str(tmp_path), **overrides})


def test_trainer_wants_an_sfpo_config(tmp_path):
    tok = make_tokenizer()
    with pytest.raises(TypeError, match="SFPOConfig"):
        SFPOTrainer(model=make_model(tok), reward_funcs=lambda completions, **k: [0.0] * len(completions),
                    args=GRPOConfig(**SMALL, output_dir=str(tmp_path)), processing_class=tok)


# ------------------------------------------------------------------------------------------ equivalences
@pytest.mark.parametrize("sfpo_overrides, steps_per_generation", [
    (dict(alpha=0.0, lr_stepping="optimizer_step"), 4),  # a pass of 2 optimizer steps, TRL's LR stepping
    (dict(inner_steps=0), 2),  # one optimizer step per pass: holding the LR per training step changes nothing
])
def test_off_settings_are_bit_identical_to_grpo(tmp_path, sfpo_overrides, steps_per_generation):
    common = dict(max_steps=6, steps_per_generation=steps_per_generation)
    grpo = weights(train(GRPOTrainer, GRPOConfig, tmp_path / "grpo", **common))
    sfpo = weights(train(SFPOTrainer, SFPOConfig, tmp_path / "sfpo", **common, **sfpo_overrides))
    assert_same_weights(grpo, sfpo)


def test_alpha_one_is_bit_identical_to_grpo_with_k_plus_1_iterations(tmp_path):
    common = dict(max_steps=6, steps_per_generation=4)  # one training step: 3 passes × 2 optimizer steps
    grpo = weights(train(GRPOTrainer, GRPOConfig, tmp_path / "grpo", num_iterations=3, **common))
    sfpo = train(SFPOTrainer, SFPOConfig, tmp_path / "sfpo", inner_steps=2, alpha=1.0,
                 lr_stepping="optimizer_step", **common)
    assert_same_weights(grpo, weights(sfpo))
    assert sfpo.state.log_history[-2]["sfpo/drift_norm"] > 0  # the fast passes did move: α=1 keeps θK


# ----------------------------------------------------------------------------------------------- the cycle
def test_cycle_order_one_generation_per_step_and_every_parameter_moves(tmp_path):
    before = weights(train(SFPOTrainer, SFPOConfig, tmp_path / "zero", max_steps=0))
    trainer, events = recording_run(tmp_path / "run", inner_steps=2, steps_per_generation=4, max_steps=12)
    one_step = ["snapshot", "generate", "opt", "opt", "opt", "opt", "reposition", "opt", "opt"]
    assert events == one_step * 2
    assert RecordingTrainer.old_logps_present == [True, True]  # the clip reference is θ0, not the live weights
    after = weights(trainer)
    # k_proj biases shift every attention logit of a query equally, so softmax makes their gradient exactly 0
    assert [n for n in after if torch.equal(after[n], before[n]) and not n.endswith("k_proj.bias")] == []
    logged = [h for h in trainer.state.log_history if "sfpo/alpha" in h]
    assert [h["step"] for h in logged] == [6, 12]
    assert all(h["sfpo/alpha"] == 0.8 and h["sfpo/active"] == 1.0 and h["sfpo/drift_norm"] > 0 for h in logged)
    assert all(abs(h["sfpo/reposition_norm"] - 0.8 * h["sfpo/drift_norm"]) < 1e-9 for h in logged)


def test_outer_momentum_is_carried_into_the_core_and_logged(tmp_path):
    """SFPOConfig.outer_momentum reaches the core: the first step's reposition is α(1 + μ) times its drift (m = D),
    and the momentum buffer travels with the per-rank SFPO state of the checkpoint."""
    trainer = train(SFPOTrainer, SFPOConfig, tmp_path, inner_steps=2, steps_per_generation=4, max_steps=12,
                    outer_momentum=0.5, save_strategy="steps", save_steps=6)
    logged = [h for h in trainer.state.log_history if "sfpo/momentum_norm" in h]
    assert [h["step"] for h in logged] == [6, 12]
    first = logged[0]
    assert first["sfpo/reposition_norm"] == pytest.approx(0.8 * 1.5 * first["sfpo/drift_norm"], rel=1e-5)
    saved = torch.load(tmp_path / "checkpoint-6" / "sfpo_state_rank0.pt", weights_only=True)
    assert saved["update"]["outer_momentum"] == 0.5 and len(saved["update"]["momentum"]) == len(
        [p for p in trainer.model.parameters() if p.requires_grad])


def test_after_the_switch_each_generation_batch_gets_one_pass_and_new_prompts(tmp_path):
    # 8 prompts, 2 per generation batch: 4 batches per shuffle. Step 0 is SFPO (3 passes), then plain steps.
    trainer, events = recording_run(tmp_path, inner_steps=2, steps_per_generation=2, switch="fixed_step",
                                    switch_stop_step=1, max_steps=8)
    assert events == (["snapshot", "generate", "opt", "opt", "reposition", "opt"]
                      + ["generate", "opt"] * 5)
    perms = [torch.randperm(8, generator=g).tolist() for g in [torch.Generator().manual_seed(0)] for _ in range(2)]
    batches = [p[i:i + 2] for p in perms for i in range(0, 8, 2)]
    expected = [sorted(f"{a}+{a + 1}=" for a in b) for b in batches[:6]]
    assert RecordingTrainer.prompts == expected
    assert trainer.switch.switched_at == 0 and trainer.num_iterations == 1
    assert [h["sfpo/alpha"] for h in trainer.state.log_history if "sfpo/alpha" in h] == [0.8] + [0.0] * 5


def test_step_sampler_matches_trl_repeat_sampler_while_sfpo_is_on():
    from trl.trainer.utils import RepeatSampler

    trl = RepeatSampler(list(range(10)), mini_repeat_count=3, batch_size=4, repeat_count=4 * 2, shuffle=True, seed=7)
    epoch = [0]
    ours = _StepSampler(num_rows=10, prompts_per_batch=4, group=3, ticks_per_pass=2, passes=4, shuffle=True, seed=7,
                        epoch=lambda: epoch[0], switch_tick=lambda: None)
    for e in range(3):  # RepeatSampler draws a new permutation per epoch; so do we
        epoch[0] = e
        assert list(ours) == list(trl) and len(ours) == len(trl)


# -------------------------------------------------------------------------------------------- LR stepping
def test_train_step_lr_stepping_holds_the_lr_for_a_whole_training_step(tmp_path):
    trainer = train(SFPOTrainer, SFPOConfig, tmp_path, inner_steps=1, steps_per_generation=2, max_steps=6,
                    lr_scheduler_type="linear")
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    linear = [1e-2 * (1 - k / 6) for k in range(6)]  # TRL's schedule, per optimizer step
    assert lrs == pytest.approx([linear[0], linear[0], linear[2], linear[2], linear[4], linear[4]], abs=1e-12)


# ------------------------------------------------------------------------------------------------ resume
# 2 SFPO steps of 3 passes × 2 optimizer steps (1-6, 7-12), then the switch (two values: |z| = 1) and plain steps
# of 2 optimizer steps; one epoch is 12 optimizer steps, so the run also crosses an epoch boundary.
RESUME = dict(inner_steps=2, steps_per_generation=4, max_steps=14, switch="entropy", switch_window=2,
              switch_threshold=0.5, switch_two_sided=True, lr_scheduler_type="linear")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, train(SFPOTrainer, SFPOConfig, out, save_strategy="steps", save_steps=1, **RESUME)


@pytest.mark.parametrize("resume_at", [9, 11, 13])  # inside a fast pass, inside the slow pass, inside a plain step
def test_resume_inside_a_step_equals_the_uninterrupted_run(tmp_path, uninterrupted, resume_at):
    out, full = uninterrupted
    assert full.switch.switched_at == 1
    resumed = train(SFPOTrainer, SFPOConfig, tmp_path, resume=str(out / f"checkpoint-{resume_at}"), **RESUME)
    assert_same_weights(weights(full), weights(resumed))
    assert resumed.switch.state_dict() == full.switch.state_dict()
    assert resumed.lr_scheduler.get_last_lr() == full.lr_scheduler.get_last_lr()


# ---------------------------------------------------------------------------------------------------- LoRA
def test_lora_anchor_holds_the_adapters_only(tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = train(SFPOTrainer, SFPOConfig, tmp_path, peft_config=lora, inner_steps=2, steps_per_generation=2,
                    max_steps=4, learning_rate=5e-2)  # ends after a fast pass of the second step: the anchor is live
    named = dict(trainer.model.named_parameters())
    anchored = {n for n, p in named.items() if any(p is q for q in trainer.sfpo.params)}
    assert anchored and anchored == {n for n in named if "lora_" in n}
    assert trainer.sfpo.phase == "fast" and trainer.sfpo.extra_bytes() == sum(named[n].numel() * 4 for n in anchored)
    base = make_model(make_tokenizer()).state_dict()
    for n, p in named.items():
        if "lora_" not in n:
            key = n.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), base[key]), n
    assert [h["sfpo/drift_norm"] > 0 for h in trainer.state.log_history if "sfpo/drift_norm" in h] == [True]
