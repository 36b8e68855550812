"""``sfpo eval``: score one model folder (or every checkpoint of a run) on a task split with avg@k and pass@k.

Writes a JSON and a markdown report; reads models like any transformers causal LM. No training here.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

__all__ = ["add_eval_args", "run_eval", "find_checkpoints"]

logger = logging.getLogger(__name__)


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="model folders, or run folders (their checkpoints/* and best/)")
    p.add_argument("--task", default="arithmetic", help="registered task name")
    p.add_argument("--task-kwargs", default="{}", help="task options as JSON")
    p.add_argument("--split", default="test")
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--k", type=int, default=4, help="samples per prompt (avg@k, pass@k)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default=None, help="folder for eval.json / eval.md (default: beside the first path)")


def find_checkpoints(path: Path) -> list[Path]:
    """A model folder itself, or the model folders inside a run folder."""
    def is_model(p: Path) -> bool:
        return (p / "config.json").exists() or (p / "adapter_config.json").exists()

    if is_model(path):
        return [path]
    found = sorted(p for p in path.glob("checkpoints/*") if is_model(p))
    found += [p for p in [path / "best"] if is_model(p)]
    found += sorted(p for p in path.glob("*") if p.is_dir() and is_model(p) and p not in found)
    if not found:
        raise FileNotFoundError(f"{path} holds no model (no config.json in it or in its checkpoints)")
    return found


def run_eval(args: argparse.Namespace) -> int:
    from sfpo.config import ConfigError
    from sfpo.evaluate import evaluate
    from sfpo.policy import load_for_eval
    from sfpo.rollout import HFEngine
    from sfpo.tasks import get_task

    try:
        task = get_task(args.task, **json.loads(args.task_kwargs))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--task {args.task}: {e}") from None
    examples = task.examples(args.split, args.num_prompts)
    results = []
    for root in map(Path, args.paths):
        for ckpt in find_checkpoints(root):
            model, tok = load_for_eval(ckpt, args.device)
            res = evaluate(HFEngine(model, tok), task, examples, k=args.k, temperature=args.temperature,
                           top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
            row = {"checkpoint": str(ckpt), "task": args.task, "split": args.split, "num_prompts": res.num_prompts,
                   "k": args.k, "avg@k": res.avg_at_k, f"pass@{args.k}": res.pass_at_k}
            logger.info("%s: avg@%d=%.4f pass@%d=%.4f", ckpt, args.k, res.avg_at_k, args.k, res.pass_at_k)
            results.append(row)
    out = Path(args.output) if args.output else Path(args.paths[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    lines = [f"| checkpoint | avg@{args.k} | pass@{args.k} |", "|---|---|---|"]
    lines += [f"| {r['checkpoint']} | {r['avg@k']:.4f} | {r[f'pass@{args.k}']:.4f} |" for r in results]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"results": results}))
    return 0
