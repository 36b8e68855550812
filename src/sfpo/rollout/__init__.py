"""Generation engines behind one small interface: ``generate`` a group of samples per prompt, ``sync_weights``.

Engines know nothing about rewards or losses. In SFPO the fast passes never touch the engine: weights are
synced once per training step, before generation.
"""

from sfpo.rollout.base import Rollout, RolloutEngine, SamplingParams
from sfpo.rollout.hf import HFEngine

__all__ = ["Rollout", "RolloutEngine", "SamplingParams", "HFEngine", "make_engine"]


def make_engine(name: str, model, tokenizer, **kwargs) -> RolloutEngine:
    """Build the engine a config names; "vllm" needs the optional vllm extra."""
    if name == "hf":
        known = {"max_batch_sequences", "max_batch_tokens", "autocast_dtype", "max_prompt_tokens"}
        if set(kwargs) - known:
            raise ValueError(f"unknown hf engine option(s) {sorted(set(kwargs) - known)}; known: {sorted(known)}")
        return HFEngine(model, tokenizer, **kwargs)
    if name == "vllm":
        from sfpo.rollout.vllm import VLLMEngine  # optional dependency, imported only when asked for

        return VLLMEngine(model, tokenizer, **kwargs)
    raise ValueError(f"unknown rollout engine {name!r}; known: 'hf', 'vllm'")
