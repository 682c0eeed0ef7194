"""The world's vocabulary as data: every factor's values, their colours and placement, the
(shape, colour) pairs held out of pretraining, and the phrases that name each value.

========== =====================================================================
shape      circle, square, triangle, diamond, star, cross, heart, ring, crescent, arrow
color      red, orange, yellow, green, cyan, blue, purple, pink, brown, white
texture    solid, striped, dotted, checkered, wavy (a darker or lighter shade of the colour)
size       small, medium, large
position   center, top left, top right, bottom left, bottom right
background black, gray, white
========== =====================================================================

:data:`PHRASES` is shared by the pretraining captions (:mod:`reprogram.toy.captions`) and the
class descriptions (:mod:`reprogram.toy.describe`), so the text encoder understands both.

The tables live in ``assets/toy/vocabulary.json``, read once at import. The packaged toy CLIP was
pretrained on these words: changing any of them changes what the demo gives.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def _frozen(value: Any) -> Any:
    """JSON lists as tuples, all the way down (the tables are read-only)."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


def read_toy_asset(name: str) -> dict[str, Any]:
    """``assets/toy/<name>`` (JSON) with its lists as tuples."""
    text = (resources.files("reprogram") / "assets" / "toy" / name).read_text(encoding="utf-8")
    return _frozen(json.loads(text))


_VOCABULARY = read_toy_asset("vocabulary.json")

FACTORS: dict[str, tuple[str, ...]] = _VOCABULARY["factors"]
FACTOR_NAMES = tuple(FACTORS)
SHAPES, COLORS, TEXTURES, SIZES, POSITIONS, BACKGROUNDS = (
    FACTORS[name] for name in ("shape", "color", "texture", "size", "position", "background")
)

COLOR_RGB: dict[str, tuple[int, int, int]] = _VOCABULARY["color_rgb"]
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = _VOCABULARY["background_rgb"]
SIZE_RADIUS: dict[str, float] = _VOCABULARY["size_radius"]  # in units of half the image width
POSITION_OFFSET: dict[str, tuple[float, float]] = _VOCABULARY["position_offset"]

# Held out of pretraining entirely: these (shape, colour) pairs never appear in a pretraining image
# (so no caption ever names them together). Shape i is held out with colours i, i+3, i+6 (mod 10):
# every shape and every colour is held out three times and seen with seven partners.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (SHAPES[i], COLORS[(i + k) % len(COLORS)]) for i in range(len(SHAPES)) for k in (0, 3, 6)
)

# Names and paraphrases of every factor value, used by captions and descriptions. For each value:
# "names" (nouns for shapes, adjectives for the rest, usable inside a noun phrase), "details"
# (phrases usable after "with" / "that has") and "clauses" (complete predicates).
PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = _VOCABULARY["phrases"]

# What each cause (factor) is called in a description sentence.
CAUSE_WORDS: dict[str, tuple[str, ...]] = _VOCABULARY["cause_words"]
# Sentences naming a class's value of a cause: {a_class} "a red star", {cls} "red star", {value}.
VALUE_SENTENCES: dict[str, tuple[str, ...]] = _VOCABULARY["value_sentences"]
