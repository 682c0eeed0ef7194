"""Class descriptions from the world's vocabulary: one file per cause, and attribute files.

The world's factors are causes in DVP-cse's sense, so a class set defined by factor values gets a
description file per cause (``{class: [sentences]}``, as published: ≥ 20 sentences per class, each
≥ 20 characters) whose sentences name that cause's value for the class in varied wording, drawn
from the same phrases the pretraining captions use (:data:`reprogram.toy.world.PHRASES`). A cause
the class does not fix (e.g. texture for a "red star" class) gets sentences saying how it varies.

Attribute files for AttrVR / DVP-cls: ``des`` (descriptive: the class's whole appearance) and
``dist`` (distinctive: how it differs from the most similar other classes of the set).

Classes from outside the world (e.g. Fashion-MNIST) carry hand-written ``notes`` in the world's
vocabulary per cause, used the same way. Everything is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reprogram.storage.files import atomic_write_json
from reprogram.toy.vocabulary import CAUSE_WORDS, VALUE_SENTENCES
from reprogram.toy.world import FACTORS, PHRASES, with_article

DEFAULT_CAUSES = ("shape", "color", "texture")
SENTENCES_PER_CLASS = 25
MIN_CHARS = 20


@dataclass
class ClassSpec:
    """A class: its name and the world factor values it fixes.

    ``notes`` adds phrases per cause, in the PHRASES schema ({"names"|"details"|"clauses": [...]});
    ``varies`` lists, per factor the class leaves free, the values it may take (default: all).
    """

    name: str
    factors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    varies: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def phrases(self, cause: str) -> dict[str, tuple[str, ...]]:
        """names / details / clauses about ``cause`` for this class (empty if it doesn't fix it)."""
        out: dict[str, list[str]] = {"names": [], "details": [], "clauses": []}
        value = self.factors.get(cause)
        if value is not None:
            for key in out:
                out[key] += PHRASES[cause][value][key]
        for key, items in self.notes.get(cause, {}).items():
            out.setdefault(key, []).extend(items)
        return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}

    def fixes(self, cause: str) -> bool:
        return any(self.phrases(cause).values())


def _rng(seed: int, *keys: str) -> np.random.Generator:
    digest = hashlib.sha256(("\0".join([str(seed), *keys])).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _finish(text: str) -> str:
    text = " ".join(text.split())
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _choose(candidates: Iterable[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` sentences: distinct ones in a seeded order, cycled if there are too few."""
    unique = [s for s in dict.fromkeys(_finish(c) for c in candidates) if len(s) >= MIN_CHARS]
    if not unique:
        raise ValueError("no sentence could be generated")
    order = rng.permutation(len(unique))
    picked = [unique[i] for i in order[:n]]
    while len(picked) < n:
        picked.append(unique[order[len(picked) % len(unique)]])
    return picked


def _value_words(cause: str, phrases: dict[str, tuple[str, ...]]) -> list[str]:
    """Noun phrases (with article) or adjectives naming the value."""
    names = list(phrases.get("names", ()))
    return [with_article(n) for n in names] if cause == "shape" else names


def _fixed_candidates(spec: ClassSpec, cause: str) -> list[str]:
    c = spec.name
    ph = spec.phrases(cause)
    words = _value_words(cause, ph)
    details, clauses = list(ph.get("details", ())), list(ph.get("clauses", ()))
    nouns = CAUSE_WORDS.get(cause, (cause,))
    out: list[str] = []
    for noun in nouns:
        for w in words:
            out += [
                f"the {noun} of {with_article(c)} is {w}",
                f"the {noun} of the {c} is {w}",
                f"in a picture, the {noun} of the {c} is {w}",
            ]
        for d in details:
            out += [
                f"the {noun} of {with_article(c)} shows {d}",
                f"looking at its {noun}, the {c} has {d}",
            ]
    for d in details:
        out += [
            f"{with_article(c)} has {d}",
            f"the {c} has {d}",
            f"one can see that the {c} has {d}",
        ]
        for w in words:
            out.append(
                f"the {c} is {w} with {d}"
                if cause != "shape"
                else f"the {c} is shaped like {w} with {d}"
            )
    for cl in clauses:
        out += [f"{with_article(c)} {cl}", f"the {c} {cl}", f"in the picture, the {c} {cl}"]
    for w in words:
        templates = VALUE_SENTENCES.get(cause, ())
        out += [t.format(a_class=with_article(c), cls=c, value=w) for t in templates]
    return out


def _varying_candidates(spec: ClassSpec, cause: str, rng: np.random.Generator) -> list[str]:
    """Sentences about a cause the class leaves free: it can take several values."""
    c = spec.name
    values = list(spec.varies.get(cause, FACTORS.get(cause, ())))
    if not values:
        return [f"the {cause} of the {c} is not fixed", f"{with_article(c)} can have any {cause}"]
    nouns = CAUSE_WORDS.get(cause, (cause,))
    out: list[str] = []
    for _ in range(60):
        k = min(len(values), int(rng.integers(2, 4)))
        picked = [values[i] for i in rng.choice(len(values), size=k, replace=False)]
        words = []
        for value in picked:
            names = PHRASES[cause][value]["names"]
            word = names[int(rng.integers(len(names)))]
            words.append(with_article(word) if cause == "shape" else word)
        listed = ", ".join(words[:-1]) + " or " + words[-1]
        noun = nouns[int(rng.integers(len(nouns)))]
        out += [
            f"the {noun} of {with_article(c)} can vary, for example {listed}",
            f"{with_article(c)} may be {listed}",
            f"there is no single {noun} for the {c}; it can be {listed}",
        ]
    return out


Candidates = Callable[[ClassSpec, np.random.Generator], list[str]]


def _per_class(
    classes: Sequence[ClassSpec], keys: tuple[str, ...], candidates: Candidates, n: int, seed: int
) -> dict[str, list[str]]:
    """``{class: n sentences}`` chosen from each class's candidates, each on its own stream."""
    out = {}
    for spec in classes:
        rng = _rng(seed, *keys, spec.name)
        out[spec.name] = _choose(candidates(spec, rng), n, rng)
    return out


def cause_descriptions(
    classes: Sequence[ClassSpec], cause: str, *, n: int = SENTENCES_PER_CLASS, seed: int = 0
) -> dict[str, list[str]]:
    """``{class: [n sentences about cause]}`` for DVP-cse."""

    def candidates(spec: ClassSpec, rng: np.random.Generator) -> list[str]:
        if spec.fixes(cause):
            return _fixed_candidates(spec, cause)
        return _varying_candidates(spec, cause, rng)

    return _per_class(classes, ("cause", cause), candidates, n, seed)


def _appearance_candidates(spec: ClassSpec, rng: np.random.Generator) -> list[str]:
    c = spec.name
    causes = [cause for cause in FACTORS if spec.fixes(cause)] + [
        cause for cause in spec.notes if cause not in FACTORS and spec.fixes(cause)
    ]
    out: list[str] = []
    for _ in range(80):
        parts = []
        for cause in causes:
            ph = spec.phrases(cause)
            pool = [("d", d) for d in ph.get("details", ())] + [
                ("c", cl) for cl in ph.get("clauses", ())
            ]
            if pool:
                parts.append(pool[int(rng.integers(len(pool)))])
        parts = list(dict.fromkeys(parts))
        if not parts:
            break
        k = int(rng.integers(1, min(3, len(parts)) + 1))
        chosen = [parts[i] for i in sorted(rng.choice(len(parts), size=k, replace=False))]
        bits = [f"has {text}" if kind == "d" else text for kind, text in chosen]
        body = bits[0] if len(bits) == 1 else ", ".join(bits[:-1]) + " and " + bits[-1]
        out.append(f"{with_article(c)} {body}" if rng.random() < 0.5 else f"the {c} {body}")
    for cause in causes:
        out += _fixed_candidates(spec, cause)[:6]
    if not out:
        out = [f"{with_article(c)} is a simple object", f"the {c} is shown in the picture"]
    return out


def descriptive_attributes(
    classes: Sequence[ClassSpec], *, n: int = SENTENCES_PER_CLASS, seed: int = 0
) -> dict[str, list[str]]:
    """AttrVR's descriptive attributes: the appearance of each class, all causes mixed."""
    return _per_class(classes, ("des",), _appearance_candidates, n, seed)


def _similarity(a: ClassSpec, b: ClassSpec) -> int:
    shared = sum(1 for k, v in a.factors.items() if b.factors.get(k) == v)
    return shared


def distinctive_attributes(
    classes: Sequence[ClassSpec], *, n: int = SENTENCES_PER_CLASS, seed: int = 0
) -> dict[str, list[str]]:
    """AttrVR's distinctive attributes: what sets each class apart from its closest neighbours."""

    def candidates(spec: ClassSpec, rng: np.random.Generator) -> list[str]:
        return _distinctive_candidates(spec, classes, rng)

    return _per_class(classes, ("dist",), candidates, n, seed)


def _distinctive_candidates(
    spec: ClassSpec, classes: Sequence[ClassSpec], rng: np.random.Generator
) -> list[str]:
    """Sentences on what ``spec`` has and its six most similar classes lack."""
    others = [o for o in classes if o.name != spec.name]
    others.sort(key=lambda o: (-_similarity(spec, o), o.name))
    candidates: list[str] = []
    for other in others[:6]:
        for cause in list(FACTORS) + [k for k in spec.notes if k not in FACTORS]:
            mine, theirs = spec.phrases(cause), other.phrases(cause)
            # only what this class has and the other lacks
            mine = {k: tuple(x for x in v if x not in theirs.get(k, ())) for k, v in mine.items()}
            if not any(mine.values()):
                continue
            c, o = spec.name, other.name
            words = _value_words(cause, mine)
            for d in mine.get("details", ()):
                candidates += [
                    f"unlike the {o}, the {c} has {d}",
                    f"what sets the {c} apart from the {o} is {d}",
                ]
            for cl in mine.get("clauses", ()):
                candidates.append(f"unlike {with_article(o)}, {with_article(c)} {cl}")
            for w in words:
                candidates.append(f"the {c} differs from the {o} in its {cause}: it is {w}")
    if not candidates:  # a single class, or classes with identical phrases
        candidates = _appearance_candidates(spec, rng)
    return candidates


def write_descriptions(
    classes: Sequence[ClassSpec],
    folder: str | Path,
    *,
    causes: Sequence[str] = DEFAULT_CAUSES,
    n: int = SENTENCES_PER_CLASS,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``cse_<i>.json`` per cause (1-based, in order), ``des.json`` and ``dist.json``."""
    folder = Path(folder)
    written = {}
    for i, cause in enumerate(causes, start=1):
        written[f"cse_{i}"] = atomic_write_json(
            folder / f"cse_{i}.json", cause_descriptions(classes, cause, n=n, seed=seed)
        )
    written["des"] = atomic_write_json(
        folder / "des.json", descriptive_attributes(classes, n=n, seed=seed)
    )
    written["dist"] = atomic_write_json(
        folder / "dist.json", distinctive_attributes(classes, n=n, seed=seed)
    )
    return written
