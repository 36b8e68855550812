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
        if kwargs:
            raise ValueError(f"the hf engine takes no options, got {sorted(kwargs)}")
        return HFEngine(model, tokenizer)
    if name == "vllm":
        from sfpo.rollout.vllm import VLLMEngine  # optional dependency, imported only when asked for

        return VLLMEngine(model, tokenizer, **kwargs)
    raise ValueError(f"unknown rollout engine {name!r}; known: 'hf', 'vllm'")
