"""Loading the policy (a folder, a hub name, or the project's warm-started testbed) and scoring tokens with it.

``load_policy`` returns a transformers causal LM and its tokenizer, wrapped in PEFT LoRA when asked;
``sequence_logprobs`` runs the training forward over prompt+completion and returns per-token log-probs and
entropies of the completion: by default through the model body to the final hidden states of the response and
then the output head in chunks of tokens (``sfpo.core.head_logprobs``), so no (B, T, V) logits tensor ever
exists; ``output_head`` finds the head. No optimisation or sampling here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path

import torch

from sfpo.config import ModelConfig
from sfpo.core.losses import HEAD_CHUNK_TOKENS, entropy_from_logits, head_logprobs, token_logprobs

__all__ = ["PolicyLoadError", "load_policy", "add_lora", "load_for_eval", "resolve_device", "sequence_logprobs",
           "output_head", "check_model_folder", "check_weight_files", "check_finite", "nonfinite_params",
           "deepspeed_unimported", "cpu_has_native_bf16", "warn_if_slow_bf16"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def deepspeed_unimported():
    """Around ``save_pretrained``: transformers unwraps the model through accelerate, which imports DeepSpeed
    whenever it is installed (and DeepSpeed then prints its accelerator warning first thing in ``sfpo demo``). A
    model can only sit in a DeepSpeed engine once DeepSpeed is imported, so until then the probe is skipped."""
    if "deepspeed" in sys.modules:
        yield
        return
    try:
        from accelerate.utils import other
    except ImportError:
        other = None
    probe = getattr(other, "is_deepspeed_available", None)
    if probe is None:  # no accelerate, or one that no longer probes here: nothing to skip
        yield
        return
    other.is_deepspeed_available = lambda: False
    try:
        yield
    finally:
        other.is_deepspeed_available = probe


class PolicyLoadError(ValueError):
    """The model path cannot be used as a causal-LM policy."""


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                    "spiece.model")
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_folder(path: str | Path, what: str = "model.path") -> None:
    """Fail with the real reason, before anything is loaded, when a local ``path`` cannot hold a model: it does
    not exist, is a file, has no config.json, no tokenizer or no weights, or a weight file is truncated. A name
    that is not a local path (a hub name) passes: transformers reports those."""
    p = Path(path).expanduser()
    if not p.exists():
        if _HUB_NAME.match(str(path)) and not str(path).startswith((".", "~")):
            return
        raise PolicyLoadError(f"{what}={str(path)!r} does not exist (neither a local folder nor a hub name like "
                              "Qwen/Qwen2.5-Math-1.5B)")
    if not p.is_dir():
        raise PolicyLoadError(f"{what}={str(path)!r} is a file; it must be a model folder (with config.json)")
    names = {f.name for f in p.iterdir()}
    if not names & {"config.json", "adapter_config.json"}:
        raise PolicyLoadError(f"{what}={str(path)!r} is not a saved model: the folder has no config.json"
                              + ("" if names else " (it is empty)"))
    if not names & set(_TOKENIZER_FILES):
        raise PolicyLoadError(f"{what}={str(path)!r} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
                              "save one beside the model with tokenizer.save_pretrained")
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise PolicyLoadError(f"{what}={str(path)!r} holds no weights (*.safetensors or *.bin)")
    check_weight_files(p)


def check_weight_files(folder: Path) -> None:
    """Each .safetensors file in ``folder`` has a complete header that covers the file (reads headers only): a
    file cut short by a full disk or an interrupted copy fails here, with its name."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise PolicyLoadError(f"{f} is truncated or corrupt ({e})") from None


def nonfinite_params(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or inf."""
    return [n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]


def check_finite(model: torch.nn.Module, source: str | Path) -> None:
    """Weights that load but hold NaN/inf would only fail deep inside sampling; name them here instead."""
    bad = nonfinite_params(model)
    if bad:
        raise PolicyLoadError(f"{source} holds non-finite weights (NaN/inf) in {_tensors(bad)}, first {bad[0]!r}: "
                              "the file is damaged or was saved from a diverged run")


def _tensors(names: list[str]) -> str:
    return f"{len(names)} tensor" + ("s" if len(names) > 1 else "")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_policy(cfg: ModelConfig, task_name: str, task_kwargs: dict):
    """(model, tokenizer) on the configured device, in training mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.path
    if path is None:
        from sfpo.testbed import warm_start  # builds (or reuses the cached) warm-started testbed policy

        kwargs = {} if cfg.warmup_steps is None else {"steps": cfg.warmup_steps}
        path = str(warm_start(task_name, task_kwargs, size=cfg.testbed_size, seed=cfg.warmup_seed, **kwargs))
    from safetensors import SafetensorError

    check_model_folder(path)
    dtype = getattr(torch, cfg.dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise PolicyLoadError(f"model.path={path!r} is not a causal language model transformers can load: {e}") \
            from None
    check_finite(model, f"model.path={path!r}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(resolve_device(cfg.device))
    model.train()
    return model, tokenizer


def add_lora(model, cfg: ModelConfig):
    """Wrap ``model`` in PEFT LoRA adapters (only they train) when ``cfg.lora_rank > 0``; else return it."""
    if cfg.lora_rank <= 0 or hasattr(model, "peft_config"):
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                            target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))


def load_for_eval(path: str | Path, device: str = "auto", dtype: str | None = None):
    """(model, tokenizer) from a model folder or a LoRA adapter folder (merged into its base for sampling), read
    directly in ``dtype`` (None: as transformers loads it): no float32 copy on the device first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_folder(path, "checkpoint")
    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {} if dtype is None else {"dtype": getattr(torch, dtype)}
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    check_finite(model, path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(resolve_device(device)).eval(), tokenizer


# Config keys of architectures whose forward changes the logits after the head (Gemma-2/3 soft-capping, Cohere's
# logit_scale, Granite's logits_scaling): the chunked head would compute other logits than the model, so not used.
_LOGIT_MODIFIERS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
_fallbacks_logged: set[tuple[str, str]] = set()


def output_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | str:
    """(body, head) of a transformers causal LM, PEFT-wrapped or not, when its logits are exactly
    ``head(body(...).last_hidden_state)`` with a plain ``nn.Linear`` head (tied to the input embedding or not);
    otherwise the reason why not, as a string."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA sits inside
    get_head, get_body = getattr(base, "get_output_embeddings", None), getattr(base, "get_decoder", None)
    if get_head is None or get_body is None:
        return f"{type(base).__name__} has no get_output_embeddings/get_decoder"
    head, body = get_head(), get_body()
    if type(head) is not torch.nn.Linear:  # a LoRA-wrapped or quantised head computes more than W h + b
        return f"its output head is a {type(head).__name__}, not a plain torch.nn.Linear"
    if not isinstance(body, torch.nn.Module) or body is base:
        return f"{type(base).__name__}.get_decoder() does not return the model body"
    config = getattr(base, "config", None)
    for key in _LOGIT_MODIFIERS:
        value = getattr(config, key, None)
        if value not in (None, 1, 1.0, 0, 0.0):
            return f"its config sets {key}={value}, which changes the logits after the head"
    return body, head


def _log_fallback(model: torch.nn.Module, reason: str) -> None:
    key = (type(model).__name__, reason)
    if key not in _fallbacks_logged:
        _fallbacks_logged.add(key)
        logger.warning("log-probs of %s use full (B, T, V) logits, not the chunked head: %s", key[0], reason)


def sequence_logprobs(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      completion_ids: torch.Tensor, completion_mask: torch.Tensor, temperature: float = 1.0,
                      with_entropy: bool = True,
                      chunk_size: int = HEAD_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log π(completion) and entropies at ``temperature``: each (B, T), float32.

    ``chunk_size`` > 0: the body runs to the final hidden states, the head only on the response tokens
    (``completion_mask`` 1; padding gets 0), ``chunk_size`` tokens at a time; 0, or a model whose head
    ``output_head`` cannot find (logged once): the model's own forward with full logits. Both agree to float
    rounding on response tokens."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P+T)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)
    positions = (attn.cumsum(-1) - 1).clamp_min(0)
    t = completion_ids.shape[1]
    found = output_head(model) if chunk_size > 0 else None
    if isinstance(found, str):
        _log_fallback(model, found)
    # no KV cache (either path): nothing decodes after a training forward, and with checkpointing transformers
    # refuses one
    if isinstance(found, tuple):
        body, head = found
        hidden = body(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=False).last_hidden_state
        hidden = hidden[:, -(t + 1):-1]  # (B, T, d): positions P-1 .. P+T-2 predict the T completion tokens
        keep = completion_mask.bool()
        logp = hidden.new_zeros(completion_ids.shape, dtype=torch.float32)
        entropy = logp.clone() if with_entropy else None
        lp, ent = head_logprobs(hidden[keep], head.weight, completion_ids[keep], temperature, bias=head.bias,
                                chunk_size=chunk_size, with_entropy=with_entropy)
        logp = logp.masked_scatter(keep, lp)
        if with_entropy:
            entropy = entropy.masked_scatter(keep, ent)
        return logp, entropy
    # logits at positions P-1 .. P+T-2 predict the T completion tokens; skip the prompt's other positions
    logits = model(input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=t + 1,
                   use_cache=False).logits[:, :-1]
    logp = token_logprobs(logits, completion_ids, temperature)
    entropy = entropy_from_logits(logits, temperature) if with_entropy else None
    return logp, entropy


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16); None where /proc/cpuinfo cannot
    tell (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def warn_if_slow_bf16(model, cfg: ModelConfig) -> bool:
    """Warn, with the reason and the alternative, when bf16 would run on a CPU without bf16 kernels: torch's
    fallback matrix multiply there is far slower than fp32 (measured on an AVX2-only machine: a Qwen2.5-0.5B step
    did not finish in 13 minutes under bf16; in fp32 it took 504 s). Returns whether it warned."""
    device = next(model.parameters()).device
    bf16 = cfg.mixed_precision == "bf16" or any(p.dtype == torch.bfloat16 for p in model.parameters())
    if device.type != "cpu" or not bf16 or cpu_has_native_bf16() is not False:
        return False
    how = "model.mixed_precision=bf16" if cfg.mixed_precision == "bf16" else "bfloat16 weights (model.dtype or the " \
          "checkpoint's own dtype under LoRA)"
    logger.warning("%s on a CPU without native bf16 kernels (no avx512_bf16/amx_bf16): torch falls back to a bf16 "
                   "matrix multiply that ran a backward pass ~100x slower than fp32 on such a machine. Train in fp32 "
                   "here (model.mixed_precision=none, model.dtype=float32), or on a GPU", how)
    return True
