"""Rollout batches as the update sees them, and how a batch is cut into mini- and micro-batches.

``Batch`` holds one step's token tensors (prompt, response, masks, advantages, old/reference log-probs);
``chunks`` cuts rows into equal parts or fixed sizes; ``token_budget_rows`` packs rows of similar length up to
a token budget (verl's dynamic batch size); ``layout`` is one training pass's mini- and micro-batches, and
``padding_metrics`` what padding they carry. No model, loss or optimizer here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Batch", "chunks", "layout", "padding_metrics", "token_budget_rows"]


@dataclass
class Batch:
    """One rollout batch as the update sees it. N = prompts × group_size responses."""

    prompt_ids: torch.Tensor  # (N, P)
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, T)
    completion_mask: torch.Tensor  # (N, T)
    advantages: torch.Tensor  # (N,)
    old_logprobs: torch.Tensor  # (N, T) at θ0
    ref_logprobs: torch.Tensor | None  # (N, T) reference policy, only with kl_coef > 0

    def rows(self, idx: slice) -> "Batch":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Batch(*(pick(getattr(self, f)) for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def trimmed(self) -> "Batch":
        """Drop padding columns no row of this (micro-)batch uses: a batch is padded to the step's longest prompt
        and response, and short micro-batches should not pay for them. Masked math is unchanged."""
        p0 = int(self.prompt_mask.any(0).long().argmax())  # first prompt column any row uses (left padding)
        t1 = max(int(self.completion_mask.sum(-1).max()), 1)  # last response column any row uses
        return Batch(self.prompt_ids[:, p0:], self.prompt_mask[:, p0:], self.completion_ids[:, :t1],
                     self.completion_mask[:, :t1], self.advantages, self.old_logprobs[:, :t1],
                     None if self.ref_logprobs is None else self.ref_logprobs[:, :t1])


def token_budget_rows(prompt_lens: torch.Tensor, completion_lens: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Rows of a mini-batch packed into micro-batches of at most ``budget`` padded tokens (verl's dynamic batch
    size, for a padded rather than packed forward): rows sorted by response length, then prompt length (responses
    vary most; a total-length sort mixes long prompts with long responses and left 31% more padding on a paper-like
    shape, benchmarks/bench_padding.py), then consecutive rows grouped while rows × (longest prompt + longest
    response in the group) ≤ budget; a row over budget goes alone. Returns index tensors (into the mini-batch)
    that cover every row exactly once."""
    key = completion_lens * (int(prompt_lens.max()) + 1) + prompt_lens
    order = torch.sort(key, stable=True).indices.tolist()
    groups: list[list[int]] = []
    max_p = max_t = 0
    for i in order:
        p, t = int(prompt_lens[i]), int(completion_lens[i])
        if groups and (len(groups[-1]) + 1) * (max(max_p, p) + max(max_t, t)) <= budget:
            groups[-1].append(i)
            max_p, max_t = max(max_p, p), max(max_t, t)
        else:
            groups.append([i])
            max_p, max_t = p, t
    return [torch.tensor(g, dtype=torch.long) for g in groups]


def chunks(n: int, parts: int | None = None, size: int | None = None) -> list[slice]:
    if size:
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def layout(batch: Batch, mini_batches: int, micro_batch_size: int = 0,
           micro_batch_tokens: int = 0) -> list[tuple[slice, Batch, list]]:
    """One training pass over ``batch``: ``mini_batches`` equal mini-batches (an optimizer step each), each cut
    into micro-batches (a forward/backward each) of ``micro_batch_size`` rows, or packed up to
    ``micro_batch_tokens`` padded tokens (``token_budget_rows``) when that is set. Returns, per mini-batch, its
    slice of ``batch``, the mini-batch, and its micro-batches as row selections into the mini-batch."""
    out = []
    for ms in chunks(len(batch), parts=mini_batches):
        mini = batch.rows(ms)
        if micro_batch_tokens:
            micro = token_budget_rows(mini.prompt_mask.sum(-1).cpu(), mini.completion_mask.sum(-1).cpu(),
                                      micro_batch_tokens)
        else:
            micro = chunks(len(mini), size=micro_batch_size or len(mini))
        out.append((ms, mini, micro))
    return out


def padding_metrics(passes: list[tuple[slice, Batch, list]]) -> dict[str, float]:
    """Share of a pass's forward token slots that are padding, over the micro-batches of ``layout(...)``."""
    slots = real = 0
    for _, mini, micro in passes:
        for rows in micro:
            m = mini.rows(rows).trimmed()
            slots += m.prompt_mask.numel() + m.completion_mask.numel()
            real += int(m.prompt_mask.sum()) + int(m.completion_mask.sum())
    return {"padding/frac": 1.0 - real / max(slots, 1), "padding/tokens": float(slots - real)}
