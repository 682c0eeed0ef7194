"""Captions: a random subset of a scene's factors named in varied wording (:data:`PHRASES`), and
which images each caption truly describes (the multi-positive target of pretraining)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from reprogram.toy.vocabulary import FACTOR_NAMES, PHRASES

if TYPE_CHECKING:
    from reprogram.toy.world import Scenes

# How often a caption names each factor.
MENTION_PROB = {
    "shape": 0.85,
    "color": 0.85,
    "texture": 0.5,
    "size": 0.4,
    "position": 0.3,
    "background": 0.3,
}


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def noun_phrase(values: dict[str, str], rng: np.random.Generator) -> str:
    """E.g. 'small striped red star', from the factors present in ``values`` (without article)."""
    words = []
    if "size" in values:
        words.append(_pick(rng, PHRASES["size"][values["size"]]["names"]))
    colour = _pick(rng, PHRASES["color"][values["color"]]["names"]) if "color" in values else None
    texture = (
        _pick(rng, PHRASES["texture"][values["texture"]]["names"]) if "texture" in values else None
    )
    adjectives = [w for w in (texture, colour) if w]
    if len(adjectives) == 2 and rng.random() < 0.5:
        adjectives.reverse()
    words += adjectives
    if "shape" in values:
        words.append(_pick(rng, PHRASES["shape"][values["shape"]]["names"]))
    else:
        words.append(_pick(rng, ("shape", "object", "figure")))
    return " ".join(words)


def _extras(values: dict[str, str], rng: np.random.Generator) -> list[str]:
    """Trailing phrases for position and background."""
    extras = []
    if "position" in values:
        extras.append(_pick(rng, PHRASES["position"][values["position"]]["names"]))
    if "background" in values:
        bg = _pick(rng, PHRASES["background"][values["background"]]["names"])
        extras.append(_pick(rng, (f"on a {bg} background", f"against a {bg} background")))
    if len(extras) == 2 and rng.random() < 0.5:
        extras.reverse()
    return extras


_PREFIXES = (
    "{np}",
    "a photo of {np}",
    "This is a photo of {np}.",
    "an image of {np}",
    "a picture showing {np}",
    "a rendering of {np}",
    "there is {np}",
    "a drawing of {np}",
    "a photo of {np}.",
)


def caption(values: dict[str, str], rng: np.random.Generator) -> str:
    """A caption that names exactly the factors in ``values`` (a subset of the scene's factors)."""
    style = rng.random()
    if style < 0.72 or not ({"shape", "color"} & set(values)):
        phrase = noun_phrase(values, rng)
        # class-name prompts ("This is a photo of red star.") come without an article
        np_ = phrase if rng.random() < 0.3 else with_article(phrase)
        template = _pick(rng, _PREFIXES)
        text = template.format(np=np_)
        extras = _extras(values, rng)
        if extras:
            text = (
                text.rstrip(".") + " " + " ".join(extras) + ("." if template.endswith(".") else "")
            )
        return text
    # sentence style: a noun phrase with some factors, predicates for the others
    parts = dict(values)
    head_keys = [k for k in ("shape", "color") if k in parts]
    head = {k: parts.pop(k) for k in head_keys[: 1 + int(rng.random() < 0.5)]}
    subject = f"the {noun_phrase(head, rng)}"
    clauses = []
    for name in ("shape", "color", "texture", "size", "position", "background"):
        if name not in parts:
            continue
        vocab = PHRASES[name][parts[name]]
        if vocab["details"] and rng.random() < 0.5:
            clauses.append(f"has {_pick(rng, vocab['details'])}")
        else:
            clauses.append(_pick(rng, vocab["clauses"]))
    if not clauses:
        return f"{subject[0].upper()}{subject[1:]} is shown."
    order = rng.permutation(len(clauses))
    clauses = [clauses[i] for i in order]
    body = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    text = f"{subject} {body}."
    return text[0].upper() + text[1:]


def mention_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 6) bools: which factors each caption names (at least shape or colour)."""
    probs = np.array([MENTION_PROB[name] for name in FACTOR_NAMES])
    mask = rng.random((n, len(FACTOR_NAMES))) < probs
    none = ~(mask[:, 0] | mask[:, 1])
    pick = rng.integers(0, 2, n)
    mask[none, pick[none]] = True
    return mask


def captions_for(scenes: Scenes, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """One caption per scene and the (N, 6) mask of the factors each caption names."""
    mask = mention_mask(len(scenes), rng)
    texts = []
    for i in range(len(scenes)):
        labels = scenes.labels(i)
        values = {name: labels[name] for j, name in enumerate(FACTOR_NAMES) if mask[i, j]}
        texts.append(caption(values, rng))
    return texts, mask


def caption_match(factors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, N) bools: image i is truly described by caption j (which names factors of scene j).

    Used as the multi-positive target of the contrastive loss: a caption like "a red shape" matches
    every red object in the batch, not only its own image.
    """
    same = factors[:, None, :] == factors[None, :, :]  # [i, j, f]
    return np.all(same | ~mask[None, :, :], axis=2)
