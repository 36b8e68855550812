"""In-process sampling with a transformers causal LM and its KV cache.

A plain decode loop instead of ``model.generate``: on ~1M-parameter models generate's per-step bookkeeping
(logits processors, stopping criteria, cache checks) cost more than the forward itself. The engine samples
from the training model directly, so ``sync_weights`` has nothing to copy. Options bound the batch that decodes at
once (sequences or KV-cache tokens), run the forward under bf16/fp16 autocast, and cut long prompts. No rewards,
no losses here.
"""

from __future__ import annotations

import contextlib
import inspect

import torch

from sfpo.rollout.base import Rollout, SamplingParams

__all__ = ["HFEngine", "top_p_filter", "eos_token_ids"]

_FIRST_TOP_K = 64  # candidates tried first for the nucleus; a peaked LM distribution rarely needs more


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens outside the smallest set whose probability reaches ``top_p``. (N, V).

    Sorting the whole vocabulary every decode step cost 0.7-1.1 s at V = 151,936 on CPU; the nucleus is found among
    the ``k`` most probable tokens instead (``topk``), k growing ×8 until every row's top-k mass reaches top_p,
    which is the same set as the full sort's."""
    if top_p >= 1.0:
        return logits
    v = logits.shape[-1]
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, 1): probabilities of the top-k without a softmax
    k = min(_FIRST_TOP_K, v)
    while True:
        top, order = torch.topk(logits, k, dim=-1)  # (N, k), descending
        p = torch.exp(top - lse)
        cum = p.cumsum(-1)
        if k == v or bool((cum[:, -1] >= top_p).all()):  # tokens past k have mass before them >= top_p
            break
        k = min(8 * k, v)
    keep_top = cum - p < top_p  # keep the token that crosses top_p
    return torch.full_like(logits, float("-inf")).scatter(-1, order, top.masked_fill(~keep_top, float("-inf")))


def eos_token_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """Every token that ends a response: the tokenizer's eos plus the model's ``generation_config`` eos list
    (instruct models end a turn with another token, e.g. Qwen's <|im_end|> beside <|endoftext|>)."""
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for t in gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]:
        if t is not None and int(t) not in ids:
            ids.append(int(t))
    return ids


class HFEngine:
    """Samples from a ``PreTrainedModel`` (decoder-only) with a left-padded batch and a ``DynamicCache``.

    ``max_batch_sequences`` / ``max_batch_tokens`` (0 = unbounded): decode at most this many sequences, or
    sequences × (prompt width + max_new_tokens) KV-cache tokens, at once. With either set, sampling draws one
    uniform per sequence and step from a stream seeded by (seed, step) and inverts the row's CDF, so the samples do
    not depend on how the batch is cut: any bound gives what one batch with the same option gives (without
    them, ``torch.multinomial`` over the whole batch, as before). ``autocast_dtype`` ("bfloat16" / "float16")
    runs the forward under autocast; the sampling distribution is computed in float32 from its logits.
    ``max_prompt_tokens`` (0 = off) keeps only the last that many tokens of a longer prompt.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, max_batch_sequences: int = 0, max_batch_tokens: int = 0,
                 autocast_dtype: str | None = None, max_prompt_tokens: int = 0) -> None:
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
        if max_batch_sequences < 0 or max_batch_tokens < 0 or max_prompt_tokens < 0:
            raise ValueError("max_batch_sequences, max_batch_tokens and max_prompt_tokens must be >= 0")
        if autocast_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"autocast_dtype must be bfloat16, float16 or None, got {autocast_dtype!r}")
        self.max_batch_sequences, self.max_batch_tokens = max_batch_sequences, max_batch_tokens
        self.autocast_dtype = None if autocast_dtype in (None, "float32") else getattr(torch, autocast_dtype)
        self.max_prompt_tokens = max_prompt_tokens
        self.eos_ids = eos_token_ids(model, tokenizer)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask, (len(prompts), P)."""
        tok = self.tokenizer
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        if self.max_prompt_tokens:
            ids = [x[-self.max_prompt_tokens:] for x in ids]  # the end holds the question and the instruction
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

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _chunk_rows(self, n: int, width: int, params: SamplingParams) -> int:
        rows = n
        if self.max_batch_sequences:
            rows = min(rows, self.max_batch_sequences)
        if self.max_batch_tokens:
            rows = min(rows, max(1, self.max_batch_tokens // (width + params.max_new_tokens)))
        return rows

    def _generate(self, prompts: list[str], params: SamplingParams) -> Rollout:
        device, tok = self.device, self.tokenizer
        prompt_ids, prompt_mask = self.encode_prompts(prompts)
        prompt_ids = prompt_ids.repeat_interleave(params.n, 0).to(device)  # (N, P)
        prompt_mask = prompt_mask.repeat_interleave(params.n, 0).to(device)
        n = prompt_ids.shape[0]
        seed = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
        keyed = bool(self.max_batch_sequences or self.max_batch_tokens)
        rows = self._chunk_rows(n, prompt_ids.shape[1], params)
        parts = [self._decode(prompt_ids, prompt_mask, a, min(a + rows, n), params, seed, keyed)
                 for a in range(0, n, rows)]
        t = max(c.shape[1] for c, _ in parts)
        completion_ids = torch.cat([torch.nn.functional.pad(c, (0, t - c.shape[1]), value=tok.pad_token_id)
                                    for c, _ in parts])  # (N, T)
        sampling_logprobs = torch.cat([torch.nn.functional.pad(lp, (0, t - lp.shape[1])) for _, lp in parts])
        is_eos = torch.isin(completion_ids, torch.tensor(self.eos_ids, device=completion_ids.device))
        # mask: every token up to and including the first EOS
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        completion_mask = (~after_eos).long()
        truncated = ~is_eos.any(-1)
        texts = [tok.decode(row[m.bool() & ~e].tolist(), skip_special_tokens=True)
                 for row, m, e in zip(completion_ids.cpu(), completion_mask.cpu(), is_eos.cpu())]
        return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, sampling_logprobs, texts, truncated)

    def _decode(self, all_ids: torch.Tensor, all_mask: torch.Tensor, a: int, b: int, params: SamplingParams,
                seed: int, keyed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample rows a..b-1 of the batch: (completion ids, sampling log-probs), each (b - a, T_chunk)."""
        device, tok = self.device, self.tokenizer
        prompt_ids, prompt_mask = all_ids[a:b], all_mask[a:b]
        n = b - a
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        eos = torch.tensor(self.eos_ids, device=device)

        cache = self._cache_cls(config=self.model.config)
        attn = prompt_mask
        positions = (attn.cumsum(-1) - 1).clamp_min(0)
        with self._autocast():
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
            if keyed:  # this step's uniform for every row of the whole batch, then this chunk's rows
                u = torch.rand(all_ids.shape[0], generator=gen, device=device)[a:b]
                cdf = probs.cumsum(-1)
                nxt = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
                nxt = nxt.clamp_max(probs.shape[-1] - 1)  # u * total rounding up to the total
            else:
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)  # (N,)
            nxt = torch.where(done, tok.pad_token_id, nxt)
            tokens.append(nxt)
            logprobs.append(torch.where(done, 0.0, logp.gather(-1, nxt[:, None]).squeeze(-1)))
            done = done | torch.isin(nxt, eos)
            if bool(done.all()):
                break
            # finished rows keep decoding pad tokens (cheaper than re-packing the cache); their outputs are dropped
            attn = torch.cat([attn, attn.new_ones(n, 1)], dim=-1)
            with self._autocast():
                out = self.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos,
                                 use_cache=True, **{self._cache_kw: cache})
            next_pos = next_pos + 1
        return torch.stack(tokens, 1), torch.stack(logprobs, 1)
