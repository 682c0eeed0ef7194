"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class ReprogramError(Exception):
    """An error caused by the user's input (file, option, class list), with a readable message."""


def lookup(table: Mapping[str, T], name: str, what: str, hint: str = "") -> T:
    """``table[name]``, or a :class:`ReprogramError` naming ``what`` and the known names."""
    if name not in table:
        raise ReprogramError(f"unknown {what} '{name}' (known: {', '.join(table)}{hint})")
    return table[name]
