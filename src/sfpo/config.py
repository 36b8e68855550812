"""Typed configuration for every part of a training run, loaded from YAML plus ``a.b=value`` overrides.

Each field has a docstring (shown by ``sfpo train --help-config``). Unknown keys and wrong types are errors
that name the key; cross-field rules live in ``__post_init__`` with the reason in the message.
It does not build anything: the trainer reads these objects.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sfpo.core.losses import HEAD_CHUNK_TOKENS
from sfpo.core.params import SFPOParams

__all__ = ["ConfigError", "ModelConfig", "TaskConfig", "RolloutConfig", "AlgorithmConfig", "OptimConfig",
           "EvalConfig", "LogConfig", "TrainConfig", "load_config", "from_dict", "to_dict", "apply_overrides"]


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key."""


# ---------------------------------------------------------------------------------------------- bounds
# Every numeric key outside SFPO's own parameter set (whose rules live in ``sfpo.core.params``) has a bound here,
# checked as its section is built, so a value that cannot train is refused before a folder or a model exists.
Rule = tuple[Callable[[Any], bool], str]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def at_least(lo: float, why: str) -> Rule:
    return (lambda x: _finite(x) and x >= lo), f">= {lo:g} ({why})"


def above(lo: float, why: str) -> Rule:
    return (lambda x: _finite(x) and x > lo), f"> {lo:g} ({why})"


def within(lo: float, hi: float, why: str, low_open: bool = False, high_open: bool = False) -> Rule:
    def ok(x: Any) -> bool:
        return _finite(x) and (x > lo if low_open else x >= lo) and (x < hi if high_open else x <= hi)
    return ok, f"in {'(' if low_open else '['}{lo:g}, {hi:g}{')' if high_open else ']'} ({why})"


def finite(why: str) -> Rule:
    return _finite, f"a finite number ({why})"


def _check_bounds(section: Any, prefix: str, rules: dict[str, Rule]) -> None:
    """Raise ConfigError for the first field of ``section`` outside its rule (None means "unset" and passes)."""
    for name, (ok, what) in rules.items():
        value = getattr(section, name)
        if value is not None and not ok(value):
            raise ConfigError(f"{prefix}{name} must be {what}, got {value!r}")


@dataclass
class ModelConfig:
    path: str | None = None
    """A folder or hub name loadable by AutoModelForCausalLM. None: the project's testbed policy, warm-started on
    the task (cached under $SFPO_CACHE_DIR or ~/.cache/sfpo)."""
    testbed_size: str = "tiny"
    """Size preset of the testbed policy when ``path`` is None."""
    warmup_steps: int | None = None
    """Supervised warm-start steps for the testbed policy (None: the testbed's default)."""
    warmup_seed: int = 0
    """Seed of the testbed warm-start. Kept apart from the run's ``seed`` so that runs with different seeds start
    from the same policy, as RL runs from one pretrained model do."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the policy."""
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ..."""
    lora_rank: int = 0
    """>0 trains LoRA adapters of this rank through PEFT (the SFPO anchor then holds adapter weights only)."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get LoRA adapters."""
    mixed_precision: Literal["none", "bf16"] = "none"
    """"bf16": forward and backward of the training passes, the old log-probs and the HF engine's sampling run
    under bfloat16 autocast, while the weights (``dtype: float32``), their gradients, the AdamW state and the SFPO
    anchor stay float32 (a 1e-6 step is below bf16's resolution). Old and training log-probs share the precision,
    so ratios are 1 at θ0. No fp16: it would need a loss scaler, and every GPU with fast fp16 but no bf16 is
    better served by fp32 here."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass of the training passes (transformers'
    activation checkpointing): activation memory of one layer instead of all, ≈1/3 more compute."""
    head_chunk_tokens: int = HEAD_CHUNK_TOKENS
    """Tokens whose logits exist at once when the trainer computes log-probs and entropies (training passes, old
    and reference log-probs, the trust-region KL): the model body runs to its final hidden states and the output
    head runs on the response tokens in chunks of this many, recomputed in the backward, so memory for the head is
    chunk × vocabulary instead of tokens × vocabulary (``sfpo.core.head_logprobs``; default measured with
    benchmarks/bench_head.py). 0: the model's own forward with full (B, T, V) logits."""

    def __post_init__(self) -> None:
        _check_bounds(self, "model.", {
            "warmup_steps": at_least(0, "supervised steps of the testbed's warm start"),
            "warmup_seed": at_least(0, "torch seeds are non-negative"),
            "lora_rank": at_least(0, "0 trains every weight, > 0 LoRA adapters of that rank"),
            "lora_alpha": above(0, "LoRA scales its update by lora_alpha / lora_rank; 0 would train nothing"),
            "head_chunk_tokens": at_least(0, "tokens per chunk of the output head; 0 = full logits"),
        })


@dataclass
class TaskConfig:
    name: str = "arithmetic"
    """A registered task (``sfpo.tasks.TASKS``)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Task options (difficulty, files, column mapping, ...), passed to the task's constructor."""
    reward_errors: Literal["raise", "zero"] = "raise"
    """A verifier that raises: stop with one clear error ("raise"), or log it and score 0 ("zero")."""
    reward_noise: float = 0.0
    """Probability that a training reward r is replaced by 1 − r (seeded per step; validation is untouched):
    a knob for noisy-reward experiments."""

    def __post_init__(self) -> None:
        _check_bounds(self, "task.", {"reward_noise": within(0, 1, "a probability")})


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm"] = "hf"
    """Generation engine: "hf" (transformers forward with a KV cache, in-process) or "vllm" (optional extra)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Options for the engine's constructor, e.g. for vllm {gpu_memory_utilization: 0.3, max_model_len: 4096};
    for hf {max_batch_sequences: 256} or {max_batch_tokens: 2000000} to decode the step's responses in chunks
    that bound the KV cache (samples do not depend on the chunking; see ``sfpo.rollout.hf.HFEngine``)."""
    num_prompts: int = 32
    """Prompts per training step (the rollout batch)."""
    group_size: int = 8
    """Responses sampled per prompt (G)."""
    temperature: float = 1.0
    """Sampling temperature; training log-probs use the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    max_new_tokens: int = 16
    """Response length limit in tokens."""
    max_prompt_tokens: int = 0
    """Longest prompt in tokens (0 = no limit; the paper: 1.5k for Qwen2.5-Math, 2k for the others). Longer prompts
    are handled by ``long_prompts``, counted and logged."""
    long_prompts: Literal["skip", "cut"] = "skip"
    """What happens to a prompt over ``max_prompt_tokens``: "skip" drops it from the training and validation sets
    once at start-up (verl's filter_overlong_prompts); "cut" keeps its last max_prompt_tokens tokens (the HF engine
    only; the question and the instruction sit at the end)."""
    old_logprobs: Literal["recompute", "sampling"] = "recompute"
    """Clip reference at θ0: a forward pass of the policy ("recompute", as verl/TRL), or the engine's own sampling
    log-probs ("sampling": saves a forward, exact only when the engine is the training model in fp32)."""

    def __post_init__(self) -> None:
        _check_bounds(self, "rollout.", {
            "num_prompts": at_least(1, "prompts per training step"),
            "group_size": at_least(2, "group advantages compare a prompt's responses with each other: a group of "
                                      "one has advantage 0 and trains nothing"),
            "temperature": above(0, "training samples its responses and divides the log-probs by it; 0 is greedy "
                                    "decoding, which has no log-probs to train on"),
            "top_p": within(0, 1, "nucleus mass; 1 is off", low_open=True),
            "max_new_tokens": at_least(1, "an empty response has nothing to train on"),
            "max_prompt_tokens": at_least(0, "0 is no limit"),
        })


@dataclass
class AlgorithmConfig:
    name: Literal["grpo", "sfpo"] = "sfpo"
    """"grpo": ``passes`` plain passes per batch; "sfpo": K fast passes, reposition, one slow pass."""
    passes: int = 1
    """GRPO only: passes over each rollout batch (μ). ``passes = inner_steps + 1`` is the same-optimizer-steps
    control for SFPO."""
    inner_steps: int = 3
    """K: fast passes per training step (SFPO)."""
    alpha: float = 0.8
    """α: reposition θ̃ = θ0 + α(θK − θ0). 0 = GRPO step; 1 = no reposition (K+1 plain passes); up to 2
    extrapolates past θK. With alpha_rule="kl_budget", the largest α a step may use (α_max)."""
    alpha_rule: Literal["fixed", "kl_budget"] = "fixed"
    """"fixed": α = ``alpha`` every step (the paper). "kl_budget": trust-region SFPO (our variant): per step the
    largest α ≤ ``alpha`` whose policy θ̃ stays within ``kl_budget`` of θ0's on the batch, measured with a
    forward over the batch at θK and at θ̃ (logged as sfpo/alpha, sfpo/kl_fast, sfpo/kl_reposition)."""
    kl_budget: float = 0.0025
    """alpha_rule="kl_budget" only: the budget on KL(π_θ0 ‖ π_θ̃) per response token on the rollout batch. The
    default is what plain SFPO (α=0.8) took at lr 3e-5 on the arithmetic testbed (median of 10 steps)."""
    outer_momentum: float = 0.0
    """μ: outer Nesterov momentum on the fast trajectory's displacement across training steps (our variant, issue
    24): m ← μm + (θK − θ0), θ̃ = θ0 + α((θK − θ0) + μm). 0 = the paper's reposition (bit for bit); the effective
    reposition grows as 1/(1 − μ), so lower the lr. Costs one more copy of the trainable parameters; logged as
    sfpo/momentum_norm and sfpo/reposition_norm."""
    slow_pass: bool = True
    """Run Stage III. False is the paper's "no slow correction" ablation (the step ends at θ̃)."""
    optimizer_state: Literal["carry", "reset", "restore"] = "carry"
    """Optimizer state at the reposition: carry (official), reset, restore (the state saved at θ0)."""
    lr_stepping: Literal["train_step", "optimizer_step"] = "train_step"
    """When the LR scheduler steps: once per training step (official) or per optimizer step."""
    switch: Literal["entropy", "fixed_step", "never"] = "entropy"
    """When SFPO turns itself off for good: the entropy z-score rule, a fixed step, or never."""
    switch_window: int = 30
    """ω: entropy values in the z-score window."""
    switch_threshold: float = 1.0
    """τ: switch off when z ≥ τ (|z| ≥ τ if two-sided)."""
    switch_two_sided: bool = False
    """Use |z| (Algorithm 1's formula) instead of the one-sided rise (its prose, the official code)."""
    switch_stop_step: int | None = None
    """For switch="fixed_step": steps before this run SFPO, later ones are plain."""
    advantage: Literal["grpo", "drgrpo", "batch_std", "rloo"] = "grpo"
    """Group advantage estimator."""
    clip_low: float = 0.2
    """ε_low of the clipped ratio."""
    clip_high: float | None = None
    """ε_high (DAPO clip-higher); None = ε_low."""
    ratio_level: Literal["token", "sequence"] = "token"
    """"sequence" = GSPO's sequence-level ratio."""
    aggregation: Literal["token_mean", "seq_mean_token_mean", "constant_length"] = "token_mean"
    """Loss aggregation; constant_length (Dr.GRPO) divides by responses × max_new_tokens."""
    kl_coef: float = 0.0
    """β for the k3 KL to the initial policy (0 = no reference model is kept)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight."""
    clip_ratio_c: float | None = None
    """Dual-clip PPO: cap a negative-advantage token's loss at −c·A (None = off; verl's default and the official
    SFPO scripts: 3.0)."""

    @property
    def sfpo_params(self) -> SFPOParams:
        """SFPO's own parameter set (K, α, α rule, momentum, switch, …): its rules are written once there, for
        this config, TRL's SFPOConfig and verl's sfpo group alike."""
        return SFPOParams.from_fields(self, prefix="algorithm.", error=ConfigError)

    def __post_init__(self) -> None:
        _check_bounds(self, "algorithm.", {
            "clip_low": within(0, 1, "the ratio is clipped to [1 − ε_low, 1 + ε_high]; 0 freezes it, 1 or more "
                                     "never clips below", low_open=True, high_open=True),
            "clip_high": above(0, "the ratio is clipped to [1 − ε_low, 1 + ε_high]; 0 freezes it"),
            "kl_coef": at_least(0, "β of the KL penalty; 0 keeps no reference model"),
            "entropy_coef": finite("a negative weight penalises entropy"),
        })
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1.0:
            raise ConfigError(f"algorithm.clip_ratio_c must be > 1 (or null for no dual clip), got {self.clip_ratio_c}")
        if self.passes < 1:
            raise ConfigError(f"algorithm.passes must be >= 1, got {self.passes}")
        if self.name == "sfpo" and self.passes != 1:
            raise ConfigError("algorithm.passes is GRPO's μ; SFPO's passes per batch are inner_steps + 1")
        self.sfpo_params  # noqa: B018 — builds it: SFPO's own rules are checked there
        if self.outer_momentum and self.name != "sfpo":
            raise ConfigError("algorithm.outer_momentum acts at SFPO's reposition; algorithm.name=grpo has none "
                              "(set algorithm.name=sfpo)")
        if self.alpha_rule == "kl_budget" and self.name != "sfpo":
            raise ConfigError("algorithm.alpha_rule='kl_budget' chooses SFPO's α; set algorithm.name=sfpo")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """AdamW learning rate (after warm-up)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW (β1, β2)."""
    eps: float = 1e-8
    """AdamW ε."""
    warmup_steps: int = 0
    """Linear LR warm-up length in scheduler steps (0 = constant LR)."""
    grad_clip: float = 1.0
    """Max global gradient norm per optimizer step (0 = off)."""
    mini_batches: int = 1
    """Optimizer steps per pass: the rollout batch is split into this many mini-batches."""
    micro_batch_size: int = 0
    """Responses per forward/backward inside a mini-batch (gradient accumulation); 0 = whole mini-batch."""
    micro_batch_tokens: int = 0
    """>0: token-budget micro-batches instead (verl's dynamic batch size): a mini-batch's rows sorted by length and
    packed while rows × the longest row's prompt+response tokens stay within this budget (a longer row goes
    alone). The loss and gradient equal one batch's (the mini-batch's normaliser); ``padding/frac`` logs the
    padded share of the training tokens. Overrides ``micro_batch_size``."""

    def __post_init__(self) -> None:
        _check_bounds(self, "optim.", {
            "lr": above(0, "a learning rate of 0 trains nothing"),
            "weight_decay": at_least(0, "decoupled decay pulls weights towards 0; negative pushes them away"),
            "eps": above(0, "AdamW divides by sqrt(v) + eps"),
            "warmup_steps": at_least(0, "0 is a constant learning rate"),
            "grad_clip": at_least(0, "0 is off"),
            "mini_batches": at_least(1, "optimizer steps per pass"),
            "micro_batch_size": at_least(0, "0 is the whole mini-batch"),
            "micro_batch_tokens": at_least(0, "0 is off"),
        })
        beta = within(0, 1, "AdamW's moment decay", high_open=True)
        if len(self.betas) != 2 or not all(beta[0](b) for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers {beta[1]}, got {self.betas!r}")


@dataclass
class EvalConfig:
    every: int = 10
    """Validate every this many training steps (and at step 0 and the last step); 0 = never."""
    num_prompts: int = 128
    """Validation prompts (the first N of the split)."""
    k: int = 4
    """Samples per prompt: the score is avg@k (mean accuracy over k samples)."""
    temperature: float = 1.0
    """Sampling temperature at validation."""
    top_p: float = 1.0
    """Nucleus threshold at validation."""
    split: str = "validation"
    """Split used for validation (the best checkpoint is selected on it)."""
    test_num_prompts: int = 0
    """>0: also score the best and the final policy on this many test prompts at the end."""

    def __post_init__(self) -> None:
        _check_bounds(self, "eval.", {
            "every": at_least(0, "0 never validates"),
            "num_prompts": at_least(1, "validation prompts; eval.every=0 turns validation off"),
            "k": at_least(1, "samples per prompt"),
            "temperature": at_least(0, "0 samples greedily"),
            "top_p": within(0, 1, "nucleus mass; 1 is off", low_open=True),
            "test_num_prompts": at_least(0, "0 skips the test"),
        })


@dataclass
class LogConfig:
    tensorboard: bool = True
    """Write TensorBoard events when tensorboard is installed."""
    wandb: bool = False
    """Log to Weights & Biases (opt-in; needs the wandb extra and a login)."""
    wandb_project: str = "sfpo"
    """W&B project name."""
    progress: bool = True
    """Show a progress bar with the live reward and accuracy."""
    plot: bool = True
    """Write learning-curve PNGs at the end."""


@dataclass
class TrainConfig:
    """A whole run. YAML files mirror this nesting; see configs/."""

    seed: int = 0
    """Seeds data order, sampling and initialisation."""
    steps: int = 100
    """Training steps (rollout batches)."""
    max_rollouts: int = 0
    """>0: stop once this many responses have been sampled for training (the rollout budget)."""
    output_dir: str = "runs/default"
    """Where metrics.jsonl, checkpoints and plots go."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep (the best-validation policy is kept apart)."""
    resume: bool = True
    """Continue from the newest checkpoint in output_dir if there is one."""
    nan_guard: bool = True
    """On a non-finite loss or gradient: skip the step, restore θ0, log it (keeps one weight copy for GRPO)."""
    max_update_ratio: float = 10.0
    """With nan_guard, also skip a step whose update leaves a weight non-finite or moves the trainable weights by
    more than this multiple of their norm, ‖θ − θ0‖ > r‖θ0‖: a diverging learning rate (even lr 1e-2 on the tests'
    20k-parameter model moves them by 0.2-0.3× per step). 0: check finiteness only."""
    max_consecutive_skips: int = 5
    """Stop the run with an error after this many skipped steps in a row: it is making no progress. 0: never."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        _check_bounds(self, "", {
            "seed": at_least(0, "torch seeds are non-negative"),
            "steps": at_least(1, "a run of 0 steps does nothing"),
            "max_rollouts": at_least(0, "0 is no budget"),
            "checkpoint_every": at_least(0, "0 saves at the end only"),
            "keep_checkpoints": at_least(1, "the newest checkpoint is what a resume needs"),
            "max_update_ratio": at_least(0, "0 checks finiteness only"),
            "max_consecutive_skips": at_least(0, "0 never stops"),
            "threads": at_least(0, "0 is torch's default"),
        })
        rows = self.rollout.num_prompts * self.rollout.group_size
        if self.optim.mini_batches > rows:
            raise ConfigError(f"optim.mini_batches={self.optim.mini_batches} is more than the {rows} responses of a "
                              f"step (rollout.num_prompts × rollout.group_size): a mini-batch would be empty")


# ------------------------------------------------------------------------------------------ (de)serialising
def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key + ".")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # PyYAML (YAML 1.1) reads 1e-4 as a string; accept numbers written that way
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s}; valid keys here: {sorted(names)}")
    kwargs = {k: _check_type(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix.split('.')[0]) else str(e))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML: 3 → int, 1e-4 → float, null → None)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (or start from the defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:  # its own text names "<unicode string>" and spans lines: say file and place
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            what = "; ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
            raise ConfigError(f"{path} is not valid YAML{where}: {what or e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data = apply_overrides(data, overrides or [])
    return from_dict(TrainConfig, data)
