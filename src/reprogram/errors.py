"""User-facing errors and warnings: the CLI prints these as one line, without a traceback."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

T = TypeVar("T")


class ReprogramError(Exception):
    """An error caused by the user's input (file, option, class list), with a readable message."""


def lookup(table: Mapping[str, T], name: str, what: str, hint: str = "") -> T:
    """``table[name]``, or a :class:`ReprogramError` naming ``what`` and the known names."""
    if name not in table:
        raise ReprogramError(f"unknown {what} '{name}' (known: {', '.join(table)}{hint})")
    return table[name]


USER_WARNINGS = (UserWarning, RuntimeWarning)  # what a user should read (not deprecations)


@contextlib.contextmanager
def routed_warnings(add: Callable[[str], None]) -> Iterator[None]:
    """Inside: each Python ``UserWarning`` or ``RuntimeWarning`` shown (an unusable cache,
    Pillow's decompression-bomb warning, …) goes to ``add`` as its message alone (no source path,
    no code line); other categories show as Python shows them. The filters apply as they are;
    everything is restored on leaving (``warnings.catch_warnings``)."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, USER_WARNINGS):
                add(str(message))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
