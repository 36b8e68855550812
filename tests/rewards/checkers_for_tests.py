"""Checkers the verifier worker imports in the timeout tests (``module:function``; on PYTHONPATH via the test).

The gold string selects a misbehaviour; anything else compares the strings, so the worker's warm-up passes.
"""

import os
import time


def misbehaving(gold: str, pred: str) -> bool:
    if gold == "sleep":
        time.sleep(float(pred))  # a verifier that hangs for `pred` seconds
        return True
    if gold == "spin":
        import re

        re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking: C code that never releases the GIL
        return True
    if gold == "crash":
        os._exit(3)  # the worker dies mid-check (a segfault or the OOM killer looks the same to the parent)
    if gold == "raise":
        raise ValueError("checker bug")
    return gold == pred
