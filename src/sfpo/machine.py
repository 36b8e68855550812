"""How busy the machine is: the snapshots behind every wall-clock figure the project prints (``sfpo demo``, the
reproduction harness), so a figure from a run that shared its cores says so."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["cpu_snapshot", "core_sharing", "SHARED_CORES"]

SHARED_CORES = 0.25  # other processes busy on at least this many cores on average: wall-clock is unreliable


def cpu_snapshot() -> dict:
    """Wall time, this process's CPU time and the whole machine's busy CPU time (Linux /proc/stat; else None)."""
    busy = None
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / ticks  # all but idle, iowait
    except (OSError, ValueError, IndexError):
        pass
    return {"wall": time.perf_counter(), "cpu": time.process_time(), "busy": busy}


def core_sharing(before: dict, after: dict) -> dict:
    """How busy the machine was with other work between two ``cpu_snapshot``s: this process's CPU seconds, the
    wall seconds, and the average number of cores other processes kept busy (None where /proc/stat is missing).
    """
    wall, own = after["wall"] - before["wall"], after["cpu"] - before["cpu"]
    others = None
    if before["busy"] is not None and after["busy"] is not None and wall > 0:
        others = max(0.0, (after["busy"] - before["busy"] - own) / wall)
    return {"wall_s": wall, "cpu_s": own, "other_cores": others,
            "shared": others is not None and others >= SHARED_CORES}
