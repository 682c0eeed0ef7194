"""Small file helpers: atomic writes, output folders and reading JSON (the cache: ``cache``).

Atomic writes go to a temporary file beside the target, named ``.<name>.<pid>.<random>.rp-tmp``
and created with mode 0o666 so that the kernel applies the umask (0644 under umask 022), are
fsynced, then renamed into place (and the folder fsynced, best effort). A kill during a save
leaves such a temporary file behind; the next write of the same target removes the ones whose
process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError

TMP_SUFFIX = ".rp-tmp"
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class StorageError(ReprogramError, OSError):
    """A file could not be written (full disk, read-only folder, a file where a folder should be).

    Both a :class:`ReprogramError` (the CLI prints one line) and an :class:`OSError` (cache code
    that falls back on any ``OSError`` keeps doing so); ``errno`` is the cause's.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


def describe_os_error(err: OSError) -> str:
    """``strerror`` of an OSError (e.g. 'No space left on device'), without the file name."""
    return err.strerror or str(err) or type(err).__name__


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``path`` (and parents); one clear line if it is a file or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StorageError(
            f"{what} {path} is an existing file, not a folder: choose another {what}", errno.ENOTDIR
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(
            f"cannot create {what} {path} ({describe_os_error(err)}): choose another {what}",
            err.errno,
        ) from err
    return path


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``path`` left by killed processes; return what was removed."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{_glob_escape(path.name)}.*{TMP_SUFFIX}"))
    except OSError:
        return removed
    for candidate in candidates:
        fields = candidate.name[len(path.name) + 2 : -len(TMP_SUFFIX)].split(".")
        pid = int(fields[0]) if fields and fields[0].isdigit() else -1
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def _glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_failure(path: Path, err: OSError) -> StorageError:
    if err.errno in DISK_FULL:
        return StorageError(
            f"no space left on device while writing {path}; the previous file is intact: "
            "free space and run again",
            err.errno,
        )
    return StorageError(f"cannot write {path} ({describe_os_error(err)})", err.errno)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A reader never sees a half-written file, and a kill leaves the old file intact. File modes
    follow the umask. Failures to write raise :class:`StorageError` (one line).
    """
    path = Path(path)
    ensure_dir(path.parent)
    clean_stale_temps(path)
    tmp = _temp_path(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if isinstance(err, StorageError):
            raise
        raise _write_failure(path, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    with contextlib.suppress(OSError):  # the rename survives a power cut once the folder is synced
        _fsync_path(path.parent, directory=True)
    return path


def _torch_write_failure(err: RuntimeError, path: Path) -> OSError:
    """What a RuntimeError of torch's zip writer means, as the OSError it stands for.

    torch reports a failed write as ``[enforce fail at inline_container.cc:…] . unexpected
    pos …`` or ``… file write failed``; the cause is the ``OSError`` of the Python file it wrote
    to (in the exception's chain), or, when torch opened the file itself, a full file system."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError):
            return cause
        cause = cause.__cause__ or cause.__context__
    first = (str(err).splitlines() or [type(err).__name__])[0]
    if _free_bytes(path.parent) < _FULL_BELOW or "file write failed" in first:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"torch could not write the file: {first}")


_FULL_BELOW = 1 << 20  # a file system with less free space than this is taken to be full


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return stats.f_bavail * stats.f_frsize


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically; a full disk is a :class:`StorageError` like any other write's."""
    import torch

    def save(tmp: Path) -> None:
        try:
            with open(tmp, "wb") as handle:  # a Python file: its OSError tells why a write failed
                torch.save(obj, handle)
        except RuntimeError as err:
            raise _torch_write_failure(err, tmp) from err

    return atomic_write(path, save)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ReprogramError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReprogramError(f"{path}: not valid JSON ({err})") from err
    except OSError as err:
        raise ReprogramError(f"cannot read {path} ({describe_os_error(err)})") from err
