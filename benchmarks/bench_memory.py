"""Training memory per token and per parameter, measured on CPU, for sizing the paper's runs on one GPU.

Per token: one training forward+backward (``sfpo.policy.sequence_logprobs`` with entropies, prompt = 1/4 and
response = 3/4 of the tokens, as the trainer runs it) of a Qwen2 of a real model's width, with and without
activation checkpointing, in fp32 and under bf16 autocast. Every tensor storage the pass creates is tracked
(a ``TorchDispatchMode`` that sees each op's outputs, freed when the last tensor on them dies), so the peak of
live bytes is exact for CPU kernels; what the forward leaves alive for the backward is reported (the backward adds
a transient of about one layer's activations, and with checkpointing one layer's recompute). Bytes per token per
decoder layer and outside the layers (LM head, logits, log-softmax, entropies) are slopes over two lengths and
two depths, so weights cancel. Short
sequences keep attention's T² scores negligible, as memory-efficient attention on a GPU makes them. Per parameter:
the tensors a Trainer holds after one SFPO step (weights, gradients, AdamW moments, the anchor), counted exactly.

    python benchmarks/bench_memory.py                      # Qwen2.5-1.5B's width (d=1536, ffn 8960), ~3 min
    python benchmarks/bench_memory.py --hidden 896 --ffn 4864 --heads 14 --kv-heads 2   # 0.5B's width
    python benchmarks/bench_memory.py --head-chunk-tokens 0   # the model's full logits instead of the chunked head

CPU kernels: a GPU's fused kernels keep fewer temporaries, so use these as estimates (upper bounds, likely).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from sfpo.core.losses import HEAD_CHUNK_TOKENS  # noqa: E402


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the mode while any tensor still refers to them."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors alive on it]
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # a view of a tensor made before the mode (weight.t(), weight[:1]) is no new memory: its storage is an
        # input's and untracked; counting it put a whole weight matrix into the peak
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key == 0 or (key in inputs and key not in self.live):
                    continue
                entry = self.live.get(key)
                if entry is None:
                    entry = self.live[key] = [storage.nbytes(), 0]
                    self.current += entry[0]
                    self.peak = max(self.peak, self.current)
                entry[1] += 1
                weakref.finalize(t, self._release, key)
        return out


def held_bytes(args, layers: int, tokens: int, ckpt: bool, bf16: bool) -> int:
    """Bytes a training forward at ``tokens`` tokens leaves alive for its backward (activations, logits, ...).

    Not the peak of the whole pass: at short lengths that is the moment the tied embedding's gradient (V·d·4
    bytes, state) is allocated, which hides the activations."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sfpo.policy import sequence_logprobs

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
                      num_hidden_layers=layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      max_position_embeddings=8192, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).train()
    if ckpt:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    prompt = tokens // 4
    ids = torch.randint(2, args.vocab, (1, tokens))
    ones = torch.ones(1, tokens, dtype=torch.long)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with LiveBytes() as mode:
        with ctx:
            logp, ent = sequence_logprobs(model, ids[:, :prompt], ones[:, :prompt], ids[:, prompt:], ones[:, prompt:],
                                          chunk_size=args.head_chunk_tokens)
            loss = -(logp.sum() + 0.001 * ent.sum())
        held = mode.current
        loss.backward()  # run, so that checkpointing's recompute path is exercised; its transient is one layer
    return held


def state_bytes_per_param() -> dict[str, float]:
    """Bytes per trained parameter that a Trainer holds after one SFPO step, by kind (exact, no estimate)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tempfile

    from tiny import ToyTask, make_model, make_tokenizer

    from sfpo.config import load_config
    from sfpo.trainer import Trainer

    out = {}
    for precision in ("none", "bf16"):
        with tempfile.TemporaryDirectory() as d:
            cfg = load_config(None, [f"output_dir={d}", "rollout.num_prompts=2", "rollout.group_size=2",
                                     "rollout.max_new_tokens=4", "eval.every=0", "log.progress=false",
                                     "log.plot=false", "log.tensorboard=false", "algorithm.switch=never",
                                     f"model.mixed_precision={precision}"])
            tok = make_tokenizer()
            t = Trainer(cfg, model=make_model(tok), tokenizer=tok, task=ToyTask())
            t.train_step()
            n = sum(p.numel() for p in t.params)
            weights = sum(p.numel() * p.element_size() for p in t.params)
            grads = sum(p.grad.numel() * p.grad.element_size() for p in t.params if p.grad is not None)
            adam = sum(v.numel() * v.element_size() for st in t.optimizer.state.values() for k, v in st.items()
                       if k != "step")
            anchor = t.update.extra_bytes()
            out[precision] = {"weights": weights / n, "grads": grads / n, "adam": adam / n, "anchor": anchor / n,
                              "total": (weights + grads + adam + anchor) / n}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--ffn", type=int, default=8960)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--tokens", type=int, nargs=2, default=[128, 256], help="the two sequence lengths")
    p.add_argument("--head-chunk-tokens", type=int, default=HEAD_CHUNK_TOKENS,
                   help="model.head_chunk_tokens: tokens per chunk of the output head (0 = full logits)")
    args = p.parse_args()
    torch.set_num_threads(1)
    (t1, t2), (l1, l2) = args.tokens, (1, 2)
    rows = {}
    for bf16 in (False, True):
        for ckpt in (False, True):
            g = {(layers, t): held_bytes(args, layers, t, ckpt, bf16) for layers in (l1, l2) for t in (t1, t2)}
            per_token_l1 = (g[(l1, t2)] - g[(l1, t1)]) / (t2 - t1)
            per_token_l2 = (g[(l2, t2)] - g[(l2, t1)]) / (t2 - t1)
            per_layer = (per_token_l2 - per_token_l1) / (l2 - l1)
            rows[("bf16" if bf16 else "fp32") + ("+ckpt" if ckpt else "")] = {
                "per_token_per_layer": per_layer, "per_token_outside_layers": per_token_l1 - l1 * per_layer}
    state = state_bytes_per_param()
    head = f"head in chunks of {args.head_chunk_tokens} tokens" if args.head_chunk_tokens else "full logits"
    print(f"Qwen2 width d={args.hidden}, ffn={args.ffn}, heads {args.heads}/{args.kv_heads}, vocab {args.vocab}, "
          f"{head}; bytes the forward keeps for the backward, slopes over {t1}->{t2} tokens (1/4 prompt) and "
          f"{l1}->{l2} layers, CPU kernels")
    print(f"{'setting':<12}{'KB/token/layer':>16}{'KB/token outside layers (head, logits)':>40}")
    for name, r in rows.items():
        print(f"{name:<12}{r['per_token_per_layer'] / 1024:>16.1f}{r['per_token_outside_layers'] / 1024:>40.1f}")
    for precision, s in state.items():
        print(f"state bytes/param ({precision}): " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()))
    print(json.dumps({"hidden": args.hidden, "ffn": args.ffn, "vocab": args.vocab, "tokens": [t1, t2],
                      "head_chunk_tokens": args.head_chunk_tokens,
                      "activations": rows, "state_bytes_per_param": state}))


if __name__ == "__main__":
    main()
