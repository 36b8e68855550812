"""The ``sfpo`` command: ``train CONFIG [key=value ...]`` (CONFIG a path or a shipped name, ``--list-configs``),
``eval``, ``demo [--quick]``, ``reproduce``, ``--version``. DeepSpeed, TRL and verl are imported only by the commands
that use them.

Errors a user can fix (bad config, unknown task, a path that is not a causal LM, a verifier that raises, a
damaged checkpoint, a full disk, a run stopped after ``max_consecutive_skips`` skipped steps) are printed as one
line and exit with status 2; everything else is a bug and keeps its traceback. A training run that finished but
skipped steps (non-finite loss, exploding update) exits with status 3 and says how many. SIGTERM or SIGINT stops
training at the next step boundary with a checkpoint and exits 143 or 130 (``sfpo.preemption``); another run
already training into the same output_dir makes ``sfpo train`` exit 2 (``sfpo.runlock``). docs/cluster.md
lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing

__all__ = ["main"]

logger = logging.getLogger("sfpo")


def _field_docs(cls: type, prefix: str = "") -> list[str]:
    """Each config field with its type, default and docstring (read from the source)."""
    import ast
    import inspect

    from sfpo import config

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    hints = typing.get_type_hints(cls, vars(config))
    lines = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines += _field_docs(hints[f.name], prefix + f.name + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{prefix}{f.name} = {default!r}\n    {docs.get(f.name, '')}")
    return lines


def _train(args: argparse.Namespace) -> int:
    from sfpo.config import TrainConfig, load_config
    from sfpo.preemption import Preempted, PreemptionHandler
    from sfpo.trainer import Trainer

    if args.help_config:
        print("\n".join(_field_docs(TrainConfig)))
        return 0
    if args.list_configs:
        from sfpo.shipped import CONFIGS_DIR, config_names

        print(f"shipped configs ({CONFIGS_DIR}); run one with `sfpo train NAME`:")
        print("\n".join(f"  {name}" for name in config_names()))
        return 0
    if args.config is None:
        raise SystemExit("sfpo train: a CONFIG is required: a YAML path or a shipped name (sfpo train --list-configs)")
    from sfpo.shipped import resolve_config

    cfg = load_config(resolve_config(args.config), args.overrides)
    with PreemptionHandler() as setup:  # a signal while the model loads: stop cleanly once it is loaded
        trainer = Trainer(cfg)
        if setup.received is not None:
            trainer.run_lock.release()
            raise Preempted(setup.received, trainer.step, None)
        summary = trainer.train()  # its own handler saves a checkpoint at the next step boundary
    print(json.dumps(summary))
    if summary["nan_skips"]:
        print(f"warning: {summary['nan_skips']} of {summary['steps']} steps were skipped (non-finite loss or "
              f"exploding update; see nan_skip in {summary['output_dir']}/metrics.jsonl)", file=sys.stderr)
        return 3
    return 0


def _eval(args: argparse.Namespace) -> int:
    from sfpo.evaluate.cli import run_eval

    return run_eval(args)


def _demo(args: argparse.Namespace) -> int:
    from sfpo.demo import format_table, run_demo, summary_json

    res = run_demo(args.output_dir, quick=args.quick, overrides=args.overrides)
    print()
    print(format_table(res))
    print(f"\nplot: {res['plot']}\nlogs: {res['logs']}/{{grpo,grpo_4passes,sfpo_noswitch}}/metrics.jsonl (TensorBoard: "
          f"tensorboard --logdir {res['logs']}); took {res['total_s']:.0f} s")
    print(summary_json(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfpo", description="Slow-Fast Policy Optimization for LM reasoning")
    from sfpo.shipped import version

    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"sfpo {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a policy with GRPO or SFPO")
    t.add_argument("config", nargs="?", help="a YAML path or a shipped config's name (see --list-configs)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. algorithm.alpha=0.5")
    t.add_argument("--help-config", action="store_true", help="list every config key with its meaning")
    t.add_argument("--list-configs", action="store_true", help="list the shipped configs by name")
    t.set_defaults(fn=_train)
    from sfpo.evaluate.cli import EVAL_DESCRIPTION, EVAL_EPILOG, add_eval_args

    e = sub.add_parser("eval", help="score checkpoints: avg@k and pass@k per benchmark, best and last",
                       description=EVAL_DESCRIPTION, epilog=EVAL_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)

    add_eval_args(e)
    e.set_defaults(fn=_eval)
    d = sub.add_parser("demo", help="GRPO, GRPO-4 and SFPO on the CPU testbed, ≈10 min on 2 cores")
    d.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    d.add_argument("--output-dir", default="runs/demo")
    d.add_argument("overrides", nargs="*", help="config overrides applied to all three runs")
    d.set_defaults(fn=_demo)
    # listed here for `sfpo --help`; main() hands everything after `reproduce` to the harness's own parser
    sub.add_parser("reproduce", help="run a reproduction grid (resumable) or rebuild its report: "
                                     "sfpo reproduce --help", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reproduce"]:
        from sfpo.reproduce.harness import main as reproduce

        return reproduce(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would drown the training progress bar
    from sfpo.config import ConfigError
    from sfpo.policy import PolicyLoadError
    from sfpo.trainer import CheckpointError, Preempted, RewardError, TrainingStalled

    try:
        return args.fn(args)
    except (ConfigError, PolicyLoadError, RewardError, FileNotFoundError, CheckpointError, TrainingStalled) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # SIGTERM/SIGINT in `train` (or `demo`): the last completed step is saved
        print(f"preempted: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
