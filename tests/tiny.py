"""Tiny things the tests build instead of downloading: a char tokenizer, a small Qwen2 policy, and a toy task
with a dense reward (so every step has non-zero advantages). Import as ``from tiny import ...``."""

import random

import torch

from sfpo.tasks.base import Example

CHARS = "0123456789+="


def make_tokenizer(chars: str = CHARS):
    """Character-level: one token per character of ``chars``, after <pad> (0) and <eos> (1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()  # join characters without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def make_model(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      tie_word_embeddings=True, max_position_embeddings=64,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg)


class ToyTask:
    """a+b= ; reward = fraction of the answer's characters matched position by position (dense, in [0, 1])."""

    name = "toy"

    def examples(self, split, n=None):
        rng = random.Random({"train": 0, "validation": 1, "test": 2}[split])
        out = []
        for i in range(n or 64):
            a, b = rng.randint(0, 49), rng.randint(0, 49)
            out.append(Example(f"{a}+{b}=", str(a + b), str(a + b), id=f"{split}-{i}"))
        return out

    def reward(self, completion, example):
        ans = example.answer
        hits = sum(x == y for x, y in zip(completion, ans))
        return hits / max(len(ans), len(completion), 1)

