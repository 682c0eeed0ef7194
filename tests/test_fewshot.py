"""Few-shot sampling: K per class from train, min(K, 4) from val; seeded; cached outside data."""

from __future__ import annotations

import json
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reprogram.data import decode_center, few_shot, load_dataset
from reprogram.data.fewshot import few_shot_key
from reprogram.errors import ReprogramError
from reprogram.storage.cache import Cache

CLASSES = {"ant": 10, "bee": 7, "cow": 3}  # training images per class (cow has fewer than K)


def make_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, scale in (("train", 1), ("val", 1), ("test", 1)):
        for name, count in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count * scale if split != "test" else 2):
                Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(
                    folder / f"{i:02d}.png"
                )
    return root


@pytest.fixture
def splits(tmp_path):
    return load_dataset(f"folder:{make_dataset(tmp_path / 'ds')}")


def per_class(samples) -> dict[int, int]:
    return dict(sorted(Counter(s.label for s in samples).items()))


def test_shots_per_class(splits):
    picked = few_shot(splits, 4, seed=1)
    assert per_class(picked.train) == {0: 4, 1: 4, 2: 3}
    assert per_class(picked.val) == {0: 4, 1: 4, 2: 3}
    assert picked.test == splits.test and picked.classnames == splits.classnames
    assert set(picked.train) <= set(splits.train) and set(picked.val) <= set(splits.val)
    assert len(set(picked.train)) == len(picked.train)
    two = few_shot(splits, 2, seed=1)
    assert per_class(two.train) == per_class(two.val) == {0: 2, 1: 2, 2: 2}
    eight = few_shot(splits, 8, seed=1)  # validation stops at 4 per class
    assert per_class(eight.train) == {0: 8, 1: 7, 2: 3}
    assert per_class(eight.val) == {0: 4, 1: 4, 2: 3}


def test_deterministic_per_seed_and_different_across_seeds(splits):
    first = few_shot(splits, 4, seed=1, use_cache=False)
    assert few_shot(splits, 4, seed=1, use_cache=False) == first
    assert few_shot(splits, 4, seed=1) == first  # drawn and cached
    assert few_shot(splits, 4, seed=1) == first  # read from the cache
    reordered = type(splits)(
        splits.name,
        splits.classnames,
        list(reversed(splits.train)),
        list(reversed(splits.val)),
        splits.test,
        splits.source,
    )
    assert few_shot(reordered, 4, seed=1, use_cache=False) == first  # input order is irrelevant
    others = [few_shot(splits, 4, seed=s, use_cache=False) for s in (2, 3)]
    assert all(set(o.train) != set(first.train) for o in others)
    assert set(others[0].val) != set(first.val) or set(others[1].val) != set(first.val)


def test_full_data(splits):
    assert few_shot(splits, 0, seed=1) is splits
    assert few_shot(splits, None, seed=1) is splits
    with pytest.raises(ReprogramError, match="shots must be a whole number"):
        few_shot(splits, -2, seed=1)
    with pytest.raises(ReprogramError, match="shots must be a whole number"):
        few_shot(splits, 2.5, seed=1)


def test_cache_lives_outside_a_read_only_dataset(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("REPROGRAM_CACHE", str(cache))
    root = make_dataset(tmp_path / "ro")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    modes = {}
    for path in [root, *root.rglob("*")]:  # read-only, as datasets often are
        modes[path] = path.stat().st_mode
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        # (as root the folder stays writable: the listing check below still holds)
        splits = load_dataset(f"folder:{root}")
        picked = few_shot(splits, 2, seed=5)
        decoded = decode_center(picked.train, 8)
        assert len(decoded) == 6
        entry = Cache.default().folder("few-shot") / f"{few_shot_key(splits, 2, 5)}.json"
        assert entry.is_file() and entry.is_relative_to(cache)
        saved = json.loads(entry.read_text())
        assert (saved["shots"], saved["seed"]) == (2, 5)
        assert [tuple(x) for x in saved["train"]] == [(s.path, s.label) for s in picked.train]
        assert list((cache / "images").glob("*.npy"))
    finally:
        for path, mode in sorted(modes.items(), key=lambda item: len(item[0].parts)):
            path.chmod(mode)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_damaged_cache_is_redrawn(splits):
    first = few_shot(splits, 3, seed=7)
    entry = Cache.default().folder("few-shot") / f"{few_shot_key(splits, 3, 7)}.json"
    entry.write_text("{not json")
    assert few_shot(splits, 3, seed=7) == first
    assert json.loads(entry.read_text())["seed"] == 7  # written again
