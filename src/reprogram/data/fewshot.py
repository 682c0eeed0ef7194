"""Few-shot sampling: K shots per class from train, min(K, 4) from val; seeded, cached."""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import random
from dataclasses import replace

from reprogram.data.readers import Sample, Splits
from reprogram.errors import ReprogramError
from reprogram.io import atomic_write_json, cache_dir

MAX_VAL_SHOTS = 4


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
    return hashlib.sha256(f"{listing}|{shots}|{seed}".encode()).hexdigest()[:24]


def few_shot(splits: Splits, shots: int | None, seed: int, use_cache: bool = True) -> Splits:
    """Return a copy of ``splits`` with ``shots`` training and ``min(shots, 4)`` validation
    images per class, drawn with ``seed`` (different seeds give different draws).

    ``shots=None`` (or 0) keeps every image ("full data"). The selection is cached under the
    user's cache folder (never in the dataset folder), keyed by the file lists, shots and seed.
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
    cache = cache_dir("few-shot") / f"{few_shot_key(splits, shots, seed)}.json"
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            return replace(
                splits,
                train=[Sample(str(p), int(label)) for p, label in data["train"]],
                val=[Sample(str(p), int(label)) for p, label in data["val"]],
            )
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is drawn again (the draw is deterministic)
    rng = random.Random(f"few-shot:{seed}")
    train = _sample_per_class(splits.train, shots, rng)
    val = _sample_per_class(splits.val, min(shots, MAX_VAL_SHOTS), rng)
    if use_cache:
        with contextlib.suppress(OSError):  # an unwritable cache only costs a redraw next time
            atomic_write_json(
                cache,
                {
                    "dataset": splits.name,
                    "shots": shots,
                    "seed": seed,
                    "train": [(s.path, s.label) for s in train],
                    "val": [(s.path, s.label) for s in val],
                },
            )
    return replace(splits, train=train, val=val)
