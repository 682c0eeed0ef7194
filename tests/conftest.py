"""Shared test setup: every test session gets its own reprogram cache folder."""

from __future__ import annotations

import os

import pytest

# Tiny models on 2 cores: one thread per process is faster than two competing ones, and the
# subprocesses that tests start (CLI, torchrun) inherit the setting. `make test-kernels` sets
# REPROGRAM_TEST_THREADS=2 to run the numeric tests on another split of the work.
THREADS = int(os.environ.get("REPROGRAM_TEST_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(THREADS)
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point ``$REPROGRAM_CACHE`` at a temporary folder (never the user's ~/.cache)."""
    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
    yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding a test marked ``slow`` run first (in their own order), so that the
    parallel workers do not end waiting on one long test."""
    heavy = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in heavy)
