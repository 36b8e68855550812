"""In-process sampling with a transformers causal LM and its KV cache.

A plain decode loop instead of ``model.generate``: on ~1M-parameter models generate's per-step bookkeeping
(logits processors, stopping criteria, cache checks) cost more than the forward itself. The engine samples
from the training model directly, so ``sync_weights`` has nothing to copy. No rewards, no losses here.
"""

from __future__ import annotations

import inspect

import torch

from sfpo.rollout.base import Rollout, SamplingParams

__all__ = ["HFEngine", "top_p_filter"]


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens outside the smallest set whose probability reaches ``top_p``. (N, V)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class HFEngine:
    """Samples from a ``PreTrainedModel`` (decoder-only) with a left-padded batch and a ``DynamicCache``."""

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        from transformers import DynamicCache  # the trainer needs transformers anyway; keep import local

        self.model = model
        self.tokenizer = tokenizer
        self._cache_cls = DynamicCache
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the forward
        params = inspect.signature(base.forward).parameters
        # transformers 5.x renamed ``past_key_values`` to ``cache``; accept both.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad and an eos token for batched sampling")

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask, (len(prompts), P)."""
        tok = self.tokenizer
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(x) for x in ids)
        out = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            if x:
                out[i, width - len(x):] = torch.tensor(x)
                mask[i, width - len(x):] = 1
        return out, mask

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        was_training = self.model.training
        self.model.eval()
        try:
            return self._generate(prompts, params)
        finally:
            self.model.train(was_training)

    def _generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        device, tok = self.device, self.tokenizer
        prompt_ids, prompt_mask = self.encode_prompts(prompts)
        prompt_ids = prompt_ids.repeat_interleave(params.n, 0).to(device)  # (N, P)
        prompt_mask = prompt_mask.repeat_interleave(params.n, 0).to(device)
        n = prompt_ids.shape[0]
        gen = torch.Generator(device=device)
        gen.manual_seed(params.seed if params.seed is not None else int(torch.randint(2**62, ()).item()))

        cache = self._cache_cls(config=self.model.config)
        attn = prompt_mask
        positions = (attn.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=prompt_ids, attention_mask=attn, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        next_pos = positions[:, -1:] + 1
        tokens, logprobs = [], []
        done = torch.zeros(n, dtype=torch.bool, device=device)
        for _ in range(params.max_new_tokens):
            logits = out.logits[:, -1, :].float()
            if params.temperature != 1.0:
                logits = logits / max(params.temperature, 1e-6)
            logp = torch.log_softmax(logits, dim=-1)
            probs = torch.softmax(top_p_filter(logits, params.top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)  # (N,)
            nxt = torch.where(done, tok.pad_token_id, nxt)
            tokens.append(nxt)
            logprobs.append(torch.where(done, 0.0, logp.gather(-1, nxt[:, None]).squeeze(-1)))
            done = done | (nxt == tok.eos_token_id)
            if bool(done.all()):
                break
            # finished rows keep decoding pad tokens (cheaper than re-packing the cache); their outputs are dropped
            attn = torch.cat([attn, attn.new_ones(n, 1)], dim=-1)
            out = self.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos,
                             use_cache=True, **{self._cache_kw: cache})
            next_pos = next_pos + 1

        completion_ids = torch.stack(tokens, 1)  # (N, T)
        sampling_logprobs = torch.stack(logprobs, 1)
        is_eos = completion_ids == tok.eos_token_id
        # mask: every token up to and including the first EOS
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        completion_mask = (~after_eos).long()
        truncated = ~is_eos.any(-1)
        texts = [tok.decode(row[m.bool() & (row != tok.eos_token_id)].tolist(), skip_special_tokens=True)
                 for row, m in zip(completion_ids.cpu(), completion_mask.cpu())]
        return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, sampling_logprobs, texts, truncated)
