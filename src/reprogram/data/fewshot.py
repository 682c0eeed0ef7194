"""Few-shot sampling: K shots per class from train, min(K, 4) from val; seeded, cached."""

from __future__ import annotations

import json
import operator
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace

from reprogram.data.readers import Sample, Splits
from reprogram.errors import ReprogramError
from reprogram.storage.cache import Cache, cache_key

MAX_VAL_SHOTS = 4
CACHE_VERSION = 1  # of the draw below: a change of the sampling must bump it


def _sample_per_class(samples: list[Sample], k: int, rng: random.Random) -> list[Sample]:
    by_class: dict[int, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: (s.label, s.path)):
        by_class.setdefault(sample.label, []).append(sample)
    chosen: list[Sample] = []
    for label in sorted(by_class):
        items = by_class[label]
        chosen += rng.sample(items, k) if len(items) > k else items
    return chosen


def few_shot_key(splits: Splits, shots: int, seed: int) -> str:
    listing = json.dumps([splits.name, [(s.path, s.label) for s in splits.train + splits.val]])
    return cache_key(CACHE_VERSION, listing, str(shots), str(seed), length=24)


def shots_per_class(
    samples: Sequence[Sample], classnames: Sequence[str], skipped: Iterable[str] = ()
) -> dict[str, int]:
    """Training images per class actually used (undecodable ``skipped`` paths left out)."""
    left_out = set(skipped)
    counts = Counter(s.label for s in samples if s.path not in left_out)
    return {name: counts[i] for i, name in enumerate(classnames)}


def check_enough_shots(splits: Splits, shots: int) -> None:
    """Refuse classes with fewer training images than ``shots`` (``allow_small_classes``)."""
    counts = shots_per_class(splits.train, splits.classnames)
    small = {name: n for name, n in counts.items() if n < shots}
    if small:
        listed = ", ".join(f"'{name}' ({n})" for name, n in list(small.items())[:5])
        raise ReprogramError(
            f"{splits.source or splits.name}: {len(small)} class(es) have fewer training images "
            f"than the {shots} shots asked: {listed}"
            + (" …" if len(small) > 5 else "")
            + ". Fix the labels, lower --shots, or train anyway with "
            "--set allow_small_classes=true"
        )


def few_shot(
    splits: Splits,
    shots: int | None,
    seed: int,
    use_cache: bool = True,
    allow_small: bool = True,
    cache: Cache | None = None,
) -> Splits:
    """Return a copy of ``splits`` with ``shots`` training and ``min(shots, 4)`` validation
    images per class, drawn with ``seed`` (different seeds give different draws).

    ``shots=None`` (or 0) keeps every image ("full data"). ``allow_small=False`` refuses a class
    with fewer than ``shots`` training images. The selection is cached under the user's cache
    folder (never in the dataset folder), keyed by the draw's version, the file lists, shots and
    seed; a damaged entry is drawn again.
    """
    if not shots:
        return splits
    try:
        count = operator.index(shots)
    except TypeError:
        count = -1
    if count < 0:
        raise ReprogramError(f"shots must be a whole number >= 0 (0: all data), not {shots!r}")
    shots = count
    if not allow_small:
        check_enough_shots(splits, shots)
    store = (cache or Cache.default()) if use_cache else Cache.disabled()
    name = f"{few_shot_key(splits, shots, seed)}.json"
    data = store.get_json("few-shot", name)
    if data is not None:
        try:
            train = [Sample(str(p), int(label)) for p, label in data["train"]]
            val = [Sample(str(p), int(label)) for p, label in data["val"]]
            if set(train) <= set(splits.train) and set(val) <= set(splits.val):
                return replace(splits, train=train, val=val)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is drawn again (the draw is deterministic)
    rng = random.Random(f"few-shot:{seed}")
    train = _sample_per_class(splits.train, shots, rng)
    val = _sample_per_class(splits.val, min(shots, MAX_VAL_SHOTS), rng)
    store.put_json(  # an unwritable cache only costs a redraw next time
        "few-shot",
        name,
        {
            "dataset": splits.name,
            "shots": shots,
            "seed": seed,
            "train": [(s.path, s.label) for s in train],
            "val": [(s.path, s.label) for s in val],
        },
    )
    return replace(splits, train=train, val=val)
