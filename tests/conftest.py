"""Shared test setup: every test session gets its own reprogram cache folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point ``$REPROGRAM_CACHE`` at a temporary folder (never the user's ~/.cache)."""
    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
    yield
