"""The time limit: a hung verifier gives 0.0 and a logged event, from any thread, and the next check works."""

import logging
import threading
import time
from pathlib import Path

import pytest

from sfpo.rewards import MathVerifier, Verdict, VerifierError, math_accuracy_reward, sfpo_math_reward

HERE = Path(__file__).resolve().parent


@pytest.fixture
def misbehaving(monkeypatch):
    """A verifier whose checker sleeps, crashes or raises on demand; the worker finds it through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    with MathVerifier(timeout_s=0.5, checker="checkers_for_tests:misbehaving") as v:
        yield v


def in_thread(fn):
    """Run fn() on a non-main thread (where math-verify's signal timeouts cannot work) and return its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "the check hung past its deadline"
    return out[0]


def test_slow_verifier_times_out_off_the_main_thread(misbehaving, caplog):
    assert misbehaving.check("a", "a") is True
    with caplog.at_level(logging.WARNING, logger="sfpo.rewards.verifier"):
        t0 = time.perf_counter()
        assert in_thread(lambda: misbehaving.check("sleep", "30")) is False
        elapsed = time.perf_counter() - t0
    assert 0.5 <= elapsed < 5.0
    assert misbehaving.timeouts == 1
    assert any("timed out after 0.5s" in r.message for r in caplog.records)
    assert misbehaving.check("a", "a") is True  # a fresh worker answers the next check
    assert misbehaving.check("a", "b") is False


def test_timeout_gives_zero_reward_through_the_reward_function(misbehaving):
    # gold "sleep" with a boxed pred "30": the checker sleeps 30 s; the reward is 0.0 after 0.5 s, not a hang
    completions = [r"\boxed{30}", r"\boxed{30}"]
    metrics = {}
    assert in_thread(lambda: math_accuracy_reward(completions, answer=["sleep", "sleep"], verifier=misbehaving,
                                                  log_metric=metrics.__setitem__)) == [0.0, 0.0]
    assert metrics == {"verifier_timeout_frac": 1.0}
    # the paper's reward gives a hung check 0.0, not the 0.1 of a wrong boxed answer
    assert in_thread(lambda: sfpo_math_reward(completions[:1], answer=["sleep"], verifier=misbehaving)) == [0.0]
    assert misbehaving.verdict("sleep", "30") is Verdict.TIMEOUT
    assert misbehaving.timeouts == 4


def test_worker_crash_and_checker_exception_score_zero_and_recover(misbehaving, caplog):
    with caplog.at_level(logging.WARNING, logger="sfpo.rewards.verifier"):
        assert misbehaving.check("crash", "x") is False
        assert misbehaving.verdict("raise", "x") is Verdict.ERROR
        assert sfpo_math_reward([r"\boxed{x}"], answer=["raise"], verifier=misbehaving) == [0.0]
    assert misbehaving.failures == 3
    messages = " ".join(r.message for r in caplog.records)
    assert "worker exited during the check" in messages and "ValueError: checker bug" in messages
    assert misbehaving.check("b", "b") is True


def test_the_worker_outlives_sigterm_and_sigint_so_the_step_in_flight_is_scored(misbehaving):
    """A scheduler signals every process of the job; the trainer finishes its step, which needs this worker."""
    import os
    import signal

    assert misbehaving.check("b", "b") is True
    pid = misbehaving._proc.pid
    for sig in (signal.SIGTERM, signal.SIGINT):
        os.kill(pid, sig)
    time.sleep(0.2)
    assert misbehaving.check("c", "c") is True and misbehaving._proc.pid == pid
    assert misbehaving.failures == 0 and misbehaving.timeouts == 0


def test_concurrent_threads_share_one_verifier(misbehaving):
    results = [None] * 8

    def work(i):
        results[i] = misbehaving.check(str(i), str(i if i % 2 else i + 1))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [i % 2 == 1 for i in range(8)]


def test_real_math_verify_hang_is_cut_off(caplog):
    """9^(9^(9^9)) against 5 keeps sympy busy for minutes inside C code, where a signal could not stop it."""
    with MathVerifier(timeout_s=1.0) as v, caplog.at_level(logging.WARNING, logger="sfpo.rewards.verifier"):
        t0 = time.perf_counter()
        assert in_thread(lambda: v.check("5", "9^{9^{9^{9}}}")) is False
        assert time.perf_counter() - t0 < 8.0
        assert v.timeouts == 1
        assert v.check("5", "5") is True


def test_a_worker_that_cannot_start_is_one_clear_error():
    v = MathVerifier(checker="no_such_module_xyz:check", startup_timeout_s=30)
    with pytest.raises(VerifierError, match="did not start"):
        v.check("1", "1")
    v.close()


def test_bad_timeout_rejected():
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        MathVerifier(timeout_s=0)


PARENT = """
import sys, threading
from sfpo.rewards import MathVerifier

timeout_s, gold, where = float(sys.argv[1]), sys.argv[2], sys.argv[3]
v = MathVerifier(timeout_s=timeout_s, checker="checkers_for_tests:misbehaving")

def work():
    assert v.check("a", "a")  # starts the worker from this thread
    print(v._proc.pid, flush=True)
    v.check(gold, "600")  # hangs until this process is killed

threading.Thread(target=work).start() if where == "thread" else work()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("where, gold, timeout_s, within_s", [
    ("main", "spin", 30.0, 5.0),    # PR_SET_PDEATHSIG: the kernel kills it with the parent, even in C code
    ("thread", "sleep", 30.0, 5.0),  # spawned off the main thread: the parent-pid watch thread
    ("thread", "spin", 1.0, 12.0),  # ... stuck holding the GIL: the per-check limit (timeout_s + 5 s)
])
def test_worker_dies_with_a_sigkilled_parent(tmp_path, where, gold, timeout_s, within_s):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(Path(__file__).parents[2] / "src")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(timeout_s), gold, where], stdout=subprocess.PIPE,
                              env=env, text=True)
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.5)  # the hanging check is under way
        assert _alive(worker)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + within_s
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphaned = _alive(worker)
    finally:
        parent.kill()
    if orphaned:
        os.kill(worker, signal.SIGKILL)
    assert not orphaned, f"the verifier worker outlived its parent by {within_s} s"
