"""Time-limited answer comparison: math-verify in a persistent worker process with a per-check deadline.

math-verify's own timeouts use ``signal.alarm``, which works only on the main thread and cannot interrupt a
long computation inside C code (``9^{9^{9^{9}}}`` hangs sympy for minutes). Here each check is sent to a child
process; if no answer comes before the deadline the child is killed, a warning is logged, the check counts as
wrong, and a fresh child is started. The child never outlives this process, even a SIGKILLed one. Safe from any
thread. This module does not extract answers.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
import weakref
from enum import Enum
from pathlib import Path

__all__ = ["MathVerifier", "Verdict", "VerifierError", "default_verifier", "set_default_verifier"]

logger = logging.getLogger(__name__)

# the src/ folder holding the sfpo package, so the child imports the same sfpo even from an uninstalled checkout
_SRC_ROOT = str(Path(__file__).resolve().parents[2])
_LIVE: weakref.WeakSet[MathVerifier] = weakref.WeakSet()
# Not imported from the worker module: importing it here would load it before `python -m` runs it in the child.
DEFAULT_CHECKER = "sfpo.rewards._verify_worker:math_verify_check"
_WORKER_GRACE_S = 5.0


class Verdict(str, Enum):
    """The outcome of one check. Only CORRECT is right; TIMEOUT and ERROR are logged failures of the checker, which
    rewards score like a missing answer (0.0), never like a wrong one."""

    CORRECT = "correct"
    WRONG = "wrong"
    BAD_GOLD = "bad_gold"
    """The gold answer does not parse: a data problem, no verdict on the completion."""
    TIMEOUT = "timeout"
    ERROR = "error"
    """The checker raised or its worker died."""


class VerifierError(RuntimeError):
    """The verifier process could not be started at all (a setup problem, never a per-answer verdict)."""


class MathVerifier:
    """``check(gold, pred)`` → True / False, or None when the gold answer itself does not parse; ``verdict`` tells
    a wrong answer from a timeout.

    ``timeout_s`` bounds one check (gold parse + prediction parse + comparison); a check that runs past it is
    logged and is ``Verdict.TIMEOUT`` (``check`` gives False). ``checker`` names the comparison as "module:function" importable in the child (the
    default is math-verify). ``isolate=False`` calls the checker in this process with NO time limit: for
    debugging and for measuring the isolation overhead only. Checks from several threads are serialised.
    """

    def __init__(self, timeout_s: float = 5.0, checker: str = DEFAULT_CHECKER, isolate: bool = True,
                 startup_timeout_s: float = 60.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s, self.checker, self.isolate = timeout_s, checker, isolate
        self.startup_timeout_s = startup_timeout_s
        self.timeouts = 0
        """Checks that ran past ``timeout_s`` (each logged)."""
        self.failures = 0
        """Checks lost to a worker crash or a checker exception (each logged)."""
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._buf = b""
        self._next_id = 0
        self._pid = os.getpid()
        self._inline = None
        _LIVE.add(self)

    # ---------------------------------------------------------------- public
    def check(self, gold: str, pred: str) -> bool | None:
        """True iff ``pred`` equals ``gold``; None when the gold does not parse; False on timeout or error."""
        v = self.verdict(gold, pred)
        return None if v is Verdict.BAD_GOLD else v is Verdict.CORRECT

    def verdict(self, gold: str, pred: str) -> Verdict:
        if not self.isolate:
            return _as_verdict(self._check_inline(gold, pred))
        with self._lock:
            return self._check_isolated(gold, pred)

    def close(self) -> None:
        """Stop the worker (a later check starts a new one)."""
        with self._lock:
            self._kill()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _check_inline(self, gold: str, pred: str) -> bool | None:
        if self._inline is None:
            from sfpo.rewards._verify_worker import load_checker

            self._inline = load_checker(self.checker)
        return self._inline(gold, pred)

    def _check_isolated(self, gold: str, pred: str) -> Verdict:
        if self._pid != os.getpid():  # forked without the at-fork hook (e.g. os.fork in C): start our own
            self._forget()
        self._ensure_ready()
        self._next_id += 1
        request = {"id": self._next_id, "gold": gold, "pred": pred}
        t0 = time.monotonic()
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except OSError as e:  # the worker died between checks (OOM killer, a signal)
            return self._lost(f"worker gone before the check ({e})", gold, pred)
        line = self._read_line(t0 + self.timeout_s)
        if line is None:
            self.timeouts += 1
            logger.warning("answer check timed out after %.1fs (gold=%r, pred=%r); scored 0, worker "
                           "restarted (%d timeouts so far)", self.timeout_s, _short(gold), _short(pred),
                           self.timeouts)
            self._restart()
            return Verdict.TIMEOUT
        if line == b"":
            return self._lost("worker exited during the check", gold, pred)
        reply = json.loads(line)
        if reply.get("id") != self._next_id:  # cannot happen with one request in flight; never trust a mismatch
            return self._lost(f"reply out of order ({reply!r})", gold, pred)
        if "error" in reply:
            self.failures += 1
            logger.warning("answer checker raised %s (gold=%r, pred=%r); scored 0", reply["error"],
                           _short(gold), _short(pred))
            return Verdict.ERROR
        return _as_verdict(reply["result"])

    def _lost(self, why: str, gold: str, pred: str) -> Verdict:
        self.failures += 1
        logger.warning("answer check lost: %s (gold=%r, pred=%r); scored 0, worker restarted", why,
                       _short(gold), _short(pred))
        self._restart()
        return Verdict.ERROR

    def _ensure_ready(self) -> None:
        if self._proc is None:
            self._spawn()
        if self._ready:
            return
        line = self._read_line(time.monotonic() + self.startup_timeout_s)
        if not line or not json.loads(line).get("ready"):
            self._kill()
            raise VerifierError(f"the answer-check worker ({self.checker}) did not start within "
                                f"{self.startup_timeout_s:.0f}s (is math-verify installed? see its stderr above)")
        self._ready = True

    def _spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_ROOT, env.get("PYTHONPATH")) if p)
        # -u: unbuffered, so a reply is on the pipe the moment the worker writes it. The worker exits with this
        # process even on SIGKILL (no atexit then); a check of its own runs at most timeout_s + 5 s, a bound
        # only reached when we are not there to kill it at timeout_s. PR_SET_PDEATHSIG follows the spawning
        # thread, so it is asked for only from the main thread (a worker thread may end before the process).
        cmd = [sys.executable, "-u", "-m", "sfpo.rewards._verify_worker", self.checker, "--parent", str(os.getpid()),
               "--limit", str(self.timeout_s + _WORKER_GRACE_S)]
        if threading.current_thread() is threading.main_thread():
            cmd.append("--pdeathsig")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._ready, self._buf, self._pid = False, b"", os.getpid()

    def _restart(self) -> None:
        self._kill()
        # start the replacement now: its ~0.5 s import overlaps with whatever the caller does next
        self._spawn()

    def _kill(self) -> None:
        proc, self._proc, self._ready, self._buf = self._proc, None, False, b""
        if proc is None:
            return
        proc.kill()  # SIGKILL: a worker stuck in C code ignores anything gentler
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:  # the pipe to a killed child may already be broken
                pass

    def _forget(self) -> None:
        """Drop a worker inherited through fork without killing it: it still serves the parent."""
        proc, self._proc, self._ready, self._buf, self._pid = self._proc, None, False, b"", os.getpid()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):  # closes only this process's copies of the pipe ends
                try:
                    stream.close()
                except OSError:
                    pass

    def _read_line(self, deadline: float) -> bytes | None:
        """One reply line; None at the deadline; b"" when the worker closed its stdout (it died)."""
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return b""
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line


def _as_verdict(result: bool | None) -> Verdict:
    return Verdict.BAD_GOLD if result is None else Verdict.CORRECT if result else Verdict.WRONG


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier the reward functions use unless given one (5 s per check)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
        return _default


def set_default_verifier(verifier: MathVerifier) -> MathVerifier:
    """Replace the process-wide verifier (e.g. a longer ``timeout_s``); returns the previous one, not closed."""
    global _default
    with _default_lock:
        previous, _default = _default, verifier
    return previous


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _default_lock
    _default_lock = threading.Lock()
    for v in list(_LIVE):
        v._lock = threading.Lock()
        v._forget()


def _close_all() -> None:
    for v in list(_LIVE):
        v._kill()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)
