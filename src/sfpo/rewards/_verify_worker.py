"""The child process behind ``MathVerifier``: reads JSON requests on stdin, answers one JSON line each on stdout.

It runs math-verify with its signal-based timeouts OFF (the parent enforces the deadline by killing this
process), so a hang inside sympy's C code cannot outlive the deadline. It knows nothing about rewards or
extraction: it compares two answer strings. Run as ``python -m sfpo.rewards._verify_worker [module:function]``.
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
import sys
from functools import lru_cache
from typing import Callable

DEFAULT_CHECKER = "sfpo.rewards._verify_worker:math_verify_check"  # the same string as in verifier.py


def _as_latex(answer: str) -> str:
    # math-verify's LaTeX extractor needs an anchor; a box is the one it tries first, and it accepts plain
    # expressions ("0.5", "1/3") inside it as well. It knows "30^\\circ" but not the Unicode "30°".
    return "\\boxed{" + answer.replace("°", "^\\circ") + "}"


@lru_cache(maxsize=4096)
def _parse_gold(gold: str):
    from math_verify import parse

    # a group of G completions shares one gold answer: parse it once
    return parse(_as_latex(gold), parsing_timeout=None)


def math_verify_check(gold: str, pred: str) -> bool | None:
    """math-verify's verdict on two extracted answers; None when the GOLD does not parse (a data problem, not
    a wrong answer)."""
    from math_verify import parse, verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return None
    pred_parsed = parse(_as_latex(pred), parsing_timeout=None)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def load_checker(spec: str) -> Callable[[str, str], bool | None]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"checker must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def serve(check: Callable[[str, str], bool | None], stdin=None, stdout=None) -> None:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    # Warm up before announcing readiness so the first real request is not charged sympy's first-call cost.
    check("1", "1")
    stdout.write(json.dumps({"ready": True}) + "\n")
    stdout.flush()
    for line in stdin:
        request = json.loads(line)
        try:
            reply = {"id": request["id"], "result": check(request["gold"], request["pred"])}
        except Exception as e:  # a checker bug on one input must not take the worker down; the parent logs it
            reply = {"id": request["id"], "error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # Ctrl-C on the trainer reaches its whole process group; the parent's exit handler stops us, so a
    # KeyboardInterrupt traceback from here would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # math-verify warns once that its own timeout is disabled; here that is intended (the parent kills us).
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
    serve(load_checker(argv[0] if argv else DEFAULT_CHECKER))


if __name__ == "__main__":
    main()
