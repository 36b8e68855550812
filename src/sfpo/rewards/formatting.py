"""Format rewards: does a completion end in exactly one usable ``\\boxed{}``, or follow the think-then-answer form.

Same TRL signature as the accuracy rewards; they never look at the gold answer, so they are shaping terms to
add to an accuracy reward, not a measure of correctness.
"""

from __future__ import annotations

from sfpo.rewards.extract import completion_text, extract_all_boxed

__all__ = ["boxed_format_reward", "think_format_reward"]


def _one_box(text: str) -> bool:
    boxes = extract_all_boxed(text)
    return len(boxes) == 1 and bool(boxes[0])


def boxed_format_reward(completions: list, **kwargs) -> list[float]:
    """1.0 when the completion holds exactly one balanced, non-empty ``\\boxed{}``, else 0.0 (several boxes hedge
    between answers; an unclosed box is what a truncated completion leaves)."""
    return [float(_one_box(completion_text(c))) for c in completions]


def think_format_reward(completions: list, **kwargs) -> list[float]:
    """1.0 for ``<think>reasoning</think>answer`` where the reasoning is non-empty, the tags appear once each, and
    the answer after ``</think>`` holds exactly one non-empty ``\\boxed{}``; else 0.0. A completion without the
    opening tag is accepted when the rest holds, because chat templates of reasoning models (Qwen3, R1) put
    ``<think>`` in the prompt."""
    rewards = []
    for completion in completions:
        text = completion_text(completion).strip()
        if text.startswith("<think>"):
            text = text[len("<think>"):]
        ok = "<think>" not in text and text.count("</think>") == 1
        if ok:
            reasoning, answer = text.split("</think>")
            ok = bool(reasoning.strip()) and _one_box(answer)
        rewards.append(float(ok))
    return rewards
