"""The child process behind ``MathVerifier``: reads JSON requests on stdin, answers one JSON line each on stdout.

It runs math-verify with its signal-based timeouts OFF (the parent enforces the deadline by killing this
process), so a hang inside sympy's C code cannot outlive the deadline, and it never outlives its parent, even a
SIGKILLed one. It knows nothing about rewards or extraction: it compares two answer strings. Run as
``python -m sfpo.rewards._verify_worker [module:function] [--parent PID --limit SECONDS [--pdeathsig]]``.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
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


def die_with_parent(parent: int, pdeathsig: bool) -> None:
    """Exit when ``parent`` does, even when it was SIGKILLed and ran no exit handler. On Linux the kernel sends
    SIGKILL when the parent *thread* that started us ends (PR_SET_PDEATHSIG), so the parent asks for it only
    from its main thread; everywhere, a daemon thread polls the parent pid, which covers any wait that lets
    Python run (a hang inside C code holding the GIL is bounded by ``serve``'s per-check limit instead)."""
    if pdeathsig and sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above could take effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(check: Callable[[str, str], bool | None], stdin=None, stdout=None, limit_s: float | None = None) -> None:
    """Answer requests until stdin closes (the parent closed it, or died). ``limit_s`` bounds one check from
    inside: a C-level watchdog (faulthandler's, which needs no GIL) ends the process should the parent not have
    killed it by then, which happens only when the parent is gone."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    # Warm up before announcing readiness so the first real request is not charged sympy's first-call cost.
    check("1", "1")
    stdout.write(json.dumps({"ready": True}) + "\n")
    stdout.flush()
    sink = open(os.devnull, "w") if limit_s else None
    for line in stdin:
        request = json.loads(line)
        if sink is not None:
            faulthandler.dump_traceback_later(limit_s, exit=True, file=sink)
        try:
            reply = {"id": request["id"], "result": check(request["gold"], request["pred"])}
        except Exception as e:  # a checker bug on one input must not take the worker down; the parent logs it
            reply = {"id": request["id"], "error": f"{type(e).__name__}: {e}"}
        if sink is not None:
            faulthandler.cancel_dump_traceback_later()
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="sfpo.rewards._verify_worker")
    p.add_argument("checker", nargs="?", default=DEFAULT_CHECKER)
    p.add_argument("--parent", type=int, default=None, help="exit when this process (our parent) is gone")
    p.add_argument("--pdeathsig", action="store_true", help="also ask Linux to kill us with the parent thread")
    p.add_argument("--limit", type=float, default=None, help="seconds after which a check ends this process")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.parent is not None:
        die_with_parent(args.parent, args.pdeathsig)
    # Ctrl-C on the trainer reaches its whole process group; the parent's exit handler stops us, so a
    # KeyboardInterrupt traceback from here would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SLURM's scancel signals every process of the job: the trainer finishes its step on SIGTERM and needs this
    # worker for it (a worker lost mid-step would score a check 0 and change the resumed run's results)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # math-verify warns once that its own timeout is disabled; here that is intended (the parent kills us).
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
    serve(load_checker(args.checker), limit_s=args.limit)


if __name__ == "__main__":
    main()
