"""The per-user cache: one explicit object for every cached artefact, never a dataset folder.

``Cache(root)`` holds folders by kind (``text-features``, ``few-shot``, ``images``,
``descriptions``) with entries named by :func:`cache_key`, a hash that starts with the version of
what made the entry (bump the version when an entry's content changes). ``Cache.default()`` is
the cache of :meth:`Cache.activate` (innermost ``with``) or else the folder that
``$REPROGRAM_CACHE`` names (``$XDG_CACHE_HOME/reprogram`` or ``~/.cache/reprogram`` without it):
the environment is read in this one place and never written. An unusable folder means working
without a cache (one warning), and a damaged or unwritable entry only costs recomputing it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogram.storage.files import atomic_write_json, describe_os_error

CACHE_ENV = "REPROGRAM_CACHE"
_ACTIVE: contextvars.ContextVar[Cache | None] = contextvars.ContextVar(
    "reprogram_cache", default=None
)


def default_root() -> Path:
    """``$REPROGRAM_CACHE``, else ``$XDG_CACHE_HOME/reprogram``, else ``~/.cache/reprogram``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reprogram"
    )
    return Path(root)


def cache_key(version: int, *parts: str, length: int = 32) -> str:
    """A hex key of ``parts`` that changes with ``version`` (the version of what made the entry)."""
    text = "\0".join([f"v{version}", *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Cache:
    """Cached artefacts under ``root`` (``None``: no cache at all)."""

    root: Path | None

    @classmethod
    def default(cls) -> Cache:
        """The active cache (:meth:`activate`), else the one the environment names."""
        return _ACTIVE.get() or cls(default_root())

    @classmethod
    def disabled(cls) -> Cache:
        return cls(None)

    @contextlib.contextmanager
    def activate(self) -> Iterator[Cache]:
        """Make this the :meth:`default` cache inside the ``with`` (this context only)."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def folder(self, kind: str) -> Path | None:
        """The (created) folder of one kind; ``None`` with a warning when it cannot be used."""
        if self.root is None:
            return None
        path = Path(self.root) / kind if kind else Path(self.root)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            warnings.warn(
                f"cache folder {path} is unusable ({describe_os_error(err)}); working without a "
                f"cache (set {CACHE_ENV} to a writable folder)",
                stacklevel=3,
            )
            return None
        return path

    def path(self, kind: str, name: str) -> Path | None:
        """Where entry ``name`` of ``kind`` lives (may not exist); ``None`` without a cache."""
        folder = self.folder(kind)
        return folder / name if folder is not None else None

    def get_json(self, kind: str, name: str) -> Any | None:
        """The JSON entry, or ``None`` when it is missing or damaged."""
        path = self.path(kind, name)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put_json(self, kind: str, name: str, obj: Any) -> Path | None:
        """Write a JSON entry; ``None`` (nothing raised) when the cache cannot take it."""
        return self.put(kind, name, lambda path: atomic_write_json(path, obj))

    def put(self, kind: str, name: str, write: Callable[[Path], Any]) -> Path | None:
        """``write(path)`` for the entry; an ``OSError`` only costs the entry (``None``)."""
        path = self.path(kind, name)
        if path is None:
            return None
        try:
            write(path)
        except OSError:
            return None
        return path
