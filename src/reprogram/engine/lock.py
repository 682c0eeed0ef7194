"""A lock on a run folder, so that two runs never write into the same ``--out``.

The lock is ``<run>/.lock``, holding the owner's pid, locked with ``fcntl.flock``: the kernel
releases it when the owner exits, however it exits (``kill -9`` included), so a stale lock of a
dead process is simply taken over. Where ``flock`` is unavailable the pid in the file decides.
Only the main process of a distributed run takes the lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from reprogram.errors import ReprogramError
from reprogram.storage.files import StorageError, describe_os_error, ensure_dir, pid_alive

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunInUse(ReprogramError):
    """The run folder is locked by another live process."""


def _in_use(run_dir: Path, pid: str) -> RunInUse:
    owner = f"pid {pid}" if pid else "another process"
    return RunInUse(
        f"{run_dir} is in use by {owner} (another reprogram run writes there): "
        "wait for it to finish, or choose another --out"
    )


def _read_pid(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return text if text.isdigit() else ""


class RunLock:
    """A held lock on a run folder; :meth:`release` (or leaving a ``with``) lets it go."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        ensure_dir(self.run_dir, "--out")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise StorageError(
                f"cannot write into {self.run_dir} ({describe_os_error(err)}): "
                "choose another --out",
                err.errno,
            ) from err
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise _in_use(self.run_dir, _read_pid(self.path)) from None
            else:
                pid = _read_pid(self.path)
                if pid and int(pid) != os.getpid() and pid_alive(int(pid)):
                    raise _in_use(self.run_dir, pid)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid: nobody holds it
        os.close(fd)  # closing releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 (the process that writes the run folder)."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[RunLock | None]:
    """Hold the run folder's lock (main process only) for the ``with`` block."""
    if not is_main_process():
        yield None
        return
    with RunLock(run_dir) as lock:
        yield lock
