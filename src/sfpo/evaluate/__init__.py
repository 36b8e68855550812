"""Scoring a policy on a task split: avg@k (mean accuracy over k samples per prompt) and unbiased pass@k.

A completion is correct when the task's reward is 1.0 (partial-credit rewards such as the paper's 0.1 for a
boxed wrong answer do not count). This module samples through a rollout engine and never trains; the
``sfpo eval`` command is built on it in ``cli`` (with ``specs``: which benchmarks, ``checkpoints``: which models,
``store``: results kept in eval.json, ``report``: tables and best/last selection), imported only when used.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from sfpo.rewards.scoring import RewardError, score
from sfpo.rollout.base import RolloutEngine, SamplingParams
from sfpo.tasks.base import Example, Task

__all__ = ["pass_at_k", "EvalResult", "evaluate", "score", "RewardError"]  # score: sfpo.rewards.scoring

logger = logging.getLogger(__name__)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 − C(n−c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class EvalResult:
    avg_at_k: float
    """Mean over prompts of the fraction of correct samples (pass@1 estimated with k samples)."""
    pass_at_k: float
    """Mean over prompts of unbiased pass@k with the k samples drawn."""
    mean_reward: float
    num_prompts: int
    k: int
    per_prompt_correct: list[int]

    def metrics(self, prefix: str = "val") -> dict[str, float]:
        return {f"{prefix}/accuracy": self.avg_at_k, f"{prefix}/pass@{self.k}": self.pass_at_k,
                f"{prefix}/reward": self.mean_reward}


def evaluate(engine: RolloutEngine, task: Task, examples: list[Example], k: int = 4, temperature: float = 1.0,
             top_p: float = 1.0, max_new_tokens: int = 16, seed: int = 0, batch_prompts: int = 64,
             on_error: str = "raise") -> EvalResult:
    """Sample k completions per example and score them with the task's verifier."""
    correct: list[int] = []
    rewards: list[float] = []
    for start in range(0, len(examples), batch_prompts):
        chunk = examples[start:start + batch_prompts]
        params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                seed=seed + start)
        rollout = engine.generate([ex.prompt for ex in chunk], params)
        scores = score(task, rollout.texts, chunk, k, on_error)
        rewards += scores
        correct += [sum(s >= 1.0 for s in scores[i * k:(i + 1) * k]) for i in range(len(chunk))]
    n = max(len(correct), 1)
    return EvalResult(
        avg_at_k=sum(c / k for c in correct) / n,
        pass_at_k=sum(pass_at_k(k, c, k) for c in correct) / n,
        mean_reward=sum(rewards) / max(len(rewards), 1),
        num_prompts=len(correct), k=k, per_prompt_correct=correct,
    )
