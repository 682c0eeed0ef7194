"""A procedural world of single objects with independent generative factors, and its captions.

Every image shows one object. Its *discrete* factors (the causes a caption can name) are listed in
:mod:`reprogram.toy.vocabulary` (shape, color, texture, size, position, background), and its
*continuous* nuisances (jitter of centre, radius, rotation, exact RGB, pattern phase and angle,
background shade, sensor noise) are drawn once by :func:`sample_scenes`, so that
:func:`~reprogram.toy.render.render` is a pure, vectorised function of a :class:`Scenes` batch: the
same seed gives the same pixels, at any image size, thousands of images a second on one core.

Captions (:mod:`reprogram.toy.captions`) name a random subset of the factors in varied wording,
drawing on the phrase vocabulary :data:`~reprogram.toy.vocabulary.PHRASES`;
:mod:`reprogram.toy.describe` builds class descriptions from the same vocabulary, so the text
encoder pretrained on these captions understands them.

This module is the world's face: the vocabulary, the renderer and the captions are importable
from here too (``world.render``, ``world.PHRASES``, ``world.caption``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from reprogram.toy.captions import (
    MENTION_PROB,
    article,
    caption,
    caption_match,
    captions_for,
    mention_mask,
    noun_phrase,
    with_article,
)
from reprogram.toy.render import object_layer, render, second_shade
from reprogram.toy.vocabulary import (
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOR_RGB,
    COLORS,
    FACTOR_NAMES,
    FACTORS,
    HELD_OUT_PAIRS,
    PHRASES,
    POSITION_OFFSET,
    POSITIONS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    TEXTURES,
)


@dataclass
class Scenes:
    """A batch of N scenes: discrete factor indices and the continuous nuisances to render them."""

    shape: np.ndarray  # (N,) int indices into SHAPES
    color: np.ndarray  # (N,) int into COLORS
    texture: np.ndarray  # (N,) int into TEXTURES
    size: np.ndarray  # (N,) int into SIZES
    position: np.ndarray  # (N,) int into POSITIONS
    background: np.ndarray  # (N,) int into BACKGROUNDS
    cx: np.ndarray  # (N,) object centre, x in [-1, 1]
    cy: np.ndarray  # (N,) object centre, y in [-1, 1] (down)
    radius: np.ndarray  # (N,) in half image widths
    angle: np.ndarray  # (N,) rotation of the shape, radians
    rgb: np.ndarray  # (N, 3) object colour in [0, 1]
    bg_rgb: np.ndarray  # (N, 3) background colour in [0, 1]
    pattern_angle: np.ndarray  # (N,) radians
    pattern_phase: np.ndarray  # (N, 2) in [0, 1)
    pattern_period: np.ndarray  # (N,) in half image widths
    noise_seed: np.ndarray  # (N,) int, per-image seed of the sensor noise
    noise_std: np.ndarray  # (N,) sensor noise in [0, 1] intensity units

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def factors(self) -> np.ndarray:
        """(N, 6) int matrix of the discrete factors in :data:`FACTOR_NAMES` order."""
        return np.stack([getattr(self, name) for name in FACTOR_NAMES], axis=1)

    def subset(self, index) -> Scenes:
        return Scenes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def replace(self, **changes) -> Scenes:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return Scenes(**data)

    def labels(self, index: int) -> dict[str, str]:
        """The factor values of scene ``index`` by name."""
        return {name: FACTORS[name][int(getattr(self, name)[index])] for name in FACTOR_NAMES}


def _index(name: str, value: str) -> int:
    try:
        return FACTORS[name].index(value)
    except ValueError as err:
        raise ValueError(f"unknown {name} '{value}' (known: {', '.join(FACTORS[name])})") from err


def sample_scenes(
    n: int,
    rng: np.random.Generator | int,
    *,
    fixed: dict[str, str | Sequence[str]] | None = None,
    exclude_pairs: Iterable[tuple[str, str]] = (),
    radius_scale: float = 1.0,
    noise_std: float = 0.02,
) -> Scenes:
    """Draw ``n`` scenes. ``fixed`` pins a factor to one value (or a per-scene sequence of values).

    ``exclude_pairs``: (shape, colour) pairs that must not occur; scenes drawing one are redrawn.
    A white object is never drawn on a white background.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    fixed = fixed or {}
    values: dict[str, np.ndarray] = {}
    for name in FACTOR_NAMES:
        if name in fixed:
            given = fixed[name]
            if isinstance(given, str):
                values[name] = np.full(n, _index(name, given), dtype=np.int64)
            else:
                if len(given) != n:
                    raise ValueError(f"fixed['{name}'] has {len(given)} values for {n} scenes")
                values[name] = np.array([_index(name, v) for v in given], dtype=np.int64)
        else:
            values[name] = rng.integers(0, len(FACTORS[name]), size=n)
    excluded = {(_index("shape", s), _index("color", c)) for s, c in exclude_pairs}
    white, white_bg = COLORS.index("white"), BACKGROUNDS.index("white")
    for _ in range(100):  # redraw the free factors of forbidden scenes
        bad = (values["color"] == white) & (values["background"] == white_bg)
        if excluded:
            code = values["shape"] * len(COLORS) + values["color"]
            bad |= np.isin(code, [s * len(COLORS) + c for s, c in excluded])
        if not bad.any():
            break
        count = int(bad.sum())
        free = [name for name in ("shape", "color", "background") if name not in fixed]
        if not free:
            raise ValueError("the fixed factors only allow excluded combinations")
        for name in free:
            values[name][bad] = rng.integers(0, len(FACTORS[name]), size=count)
    else:
        raise ValueError("could not draw scenes avoiding the excluded combinations")

    base_radius = np.array([SIZE_RADIUS[s] for s in SIZES])[values["size"]]
    radius = (base_radius * rng.uniform(0.88, 1.12, n)) * radius_scale
    offset = np.array([POSITION_OFFSET[p] for p in POSITIONS])[values["position"]]
    # keep the object inside the image whatever its size
    room = np.clip(1.0 - radius * 1.02, 0.0, None)
    cx = np.clip(offset[:, 0] + rng.uniform(-0.07, 0.07, n), -room, room)
    cy = np.clip(offset[:, 1] + rng.uniform(-0.07, 0.07, n), -room, room)
    rgb = np.array([COLOR_RGB[c] for c in COLORS], dtype=np.float64)[values["color"]]
    rgb = np.clip(rgb + rng.normal(0, 10, (n, 3)), 0, 255) / 255.0
    bg = np.array([BACKGROUND_RGB[b] for b in BACKGROUNDS], dtype=np.float64)[values["background"]]
    bg = np.clip(bg + rng.normal(0, 8, (n, 1)), 0, 255) / 255.0
    return Scenes(
        **values,
        cx=cx,
        cy=cy,
        radius=radius,
        angle=rng.uniform(-0.2, 0.2, n),
        rgb=rgb,
        bg_rgb=np.repeat(bg, 3, axis=1) if bg.shape[1] == 1 else bg,
        pattern_angle=rng.choice(np.array([0.0, 0.25, 0.5, 0.75]) * math.pi, n),
        pattern_phase=rng.uniform(0, 1, (n, 2)),
        pattern_period=rng.uniform(0.13, 0.17, n),
        noise_seed=rng.integers(0, 2**31 - 1, n),
        noise_std=np.full(n, float(noise_std)),
    )


__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_RGB",
    "COLORS",
    "COLOR_RGB",
    "FACTORS",
    "FACTOR_NAMES",
    "HELD_OUT_PAIRS",
    "MENTION_PROB",
    "PHRASES",
    "POSITIONS",
    "POSITION_OFFSET",
    "SHAPES",
    "SIZES",
    "SIZE_RADIUS",
    "TEXTURES",
    "Scenes",
    "article",
    "caption",
    "caption_match",
    "captions_for",
    "mention_mask",
    "noun_phrase",
    "preview_grid",
    "object_layer",
    "render",
    "sample_scenes",
    "second_shade",
    "with_article",
]


def preview_grid(count: int, image_size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` random world images tiled into one H×W×3 uint8 grid, and their captions."""
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(count, rng)
    images = render(scenes, image_size)
    texts, _ = captions_for(scenes, rng)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * image_size, cols * image_size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * image_size : (r + 1) * image_size, c * image_size : (c + 1) * image_size] = image
    return grid, texts
