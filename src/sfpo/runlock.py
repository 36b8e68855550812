"""One training run per output folder: an exclusive ``flock`` on ``<output_dir>/.sfpo-train.lock``.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, OOM, a node reboot), so a lock is
never stale and there is nothing to clean up. The file names its holder (pid, host, start time) for the message a
second run gets. Readers (``sfpo eval``) only probe the lock; they never take it. flock works on local disks and
on NFSv4 (where Linux maps it to a byte-range lock); a filesystem without locks is reported, not ignored.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from sfpo.config import ConfigError

__all__ = ["OutputDirBusy", "RunLock", "LOCK_NAME", "holder"]

LOCK_NAME = ".sfpo-train.lock"


class OutputDirBusy(ConfigError):
    """Another process is training into this output_dir."""


class RunLock:
    """Hold ``path``'s training lock until ``release()`` or process exit. Re-acquiring in the process that holds
    it returns the held lock (a Trainer rebuilt in one Python session on the same folder)."""

    _held: dict[Path, RunLock] = {}

    def __init__(self, out: Path, fd: int):
        self.out, self._fd = out, fd

    @classmethod
    def acquire(cls, out: Path) -> RunLock:
        out = Path(out).resolve()
        if out in cls._held:
            return cls._held[out]
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputDirBusy(f"output_dir {out} is in use by another training run ({holder(out)}): two runs "
                                    "would interleave metrics.jsonl and mix checkpoints. Wait for it to end (or stop "
                                    "it), or choose another output_dir") from None
            raise ConfigError(f"output_dir {out}: cannot lock {LOCK_NAME} ({e.strerror}); the filesystem may not "
                              "support file locks") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        lock = cls._held[out] = cls(out, fd)
        return lock

    def release(self) -> None:
        if self._fd is not None:
            RunLock._held.pop(self.out, None)
            os.close(self._fd)  # closing the descriptor drops the flock; the file stays (deleting it would race)
            self._fd = None


def holder(out: Path) -> str | None:
    """Who trains into ``out`` now ("pid 123 on host h, started ..."), or None when nobody does. Never writes."""
    try:
        fd = os.open(Path(out) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 200).decode(errors="replace").strip()
            return text or "a process that has not written its name yet"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
