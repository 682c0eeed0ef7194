"""A procedural world of single objects with independent generative factors, and its captions.

Every image shows one object. Its *discrete* factors (the causes a caption can name) are

========== =====================================================================
shape      circle, square, triangle, diamond, star, cross, heart, ring, crescent, arrow
color      red, orange, yellow, green, cyan, blue, purple, pink, brown, white
texture    solid, striped, dotted, checkered, wavy (a darker or lighter shade of the colour)
size       small, medium, large
position   center, top left, top right, bottom left, bottom right
background black, gray, white
========== =====================================================================

and its *continuous* nuisances (jitter of centre, radius, rotation, exact RGB, pattern phase and
angle, background shade, sensor noise) are drawn once by :func:`sample_scenes`, so that
:func:`render` is a pure, vectorised function of a :class:`Scenes` batch: the same seed gives the
same pixels, at any image size, thousands of images a second on one core.

Captions (:func:`caption`) name a random subset of the factors in varied wording, drawing on the
phrase vocabulary in :data:`PHRASES`; :mod:`reprogram.toy.describe` builds class descriptions
from the same vocabulary, so the text encoder pretrained on these captions understands them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "heart",
    "ring",
    "crescent",
    "arrow",
)
COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "white")
TEXTURES = ("solid", "striped", "dotted", "checkered", "wavy")
SIZES = ("small", "medium", "large")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
BACKGROUNDS = ("black", "gray", "white")

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "texture": TEXTURES,
    "size": SIZES,
    "position": POSITIONS,
    "background": BACKGROUNDS,
}
FACTOR_NAMES = tuple(FACTORS)

COLOR_RGB = {
    "red": (220, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 35),
    "green": (40, 165, 60),
    "cyan": (40, 210, 225),
    "blue": (35, 70, 220),
    "purple": (135, 50, 190),
    "pink": (245, 125, 195),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
}
BACKGROUND_RGB = {"black": (15, 15, 15), "gray": (128, 128, 128), "white": (240, 240, 240)}
SIZE_RADIUS = {"small": 0.22, "medium": 0.35, "large": 0.5}  # in units of half the image width
POSITION_OFFSET = {
    "center": (0.0, 0.0),
    "top left": (-0.42, -0.42),
    "top right": (0.42, -0.42),
    "bottom left": (-0.42, 0.42),
    "bottom right": (0.42, 0.42),
}

# Held out of pretraining entirely: these (shape, colour) pairs never appear in a pretraining image
# (so no caption ever names them together). Shape i is held out with colours i, i+3, i+6 (mod 10):
# every shape and every colour is held out three times and seen with seven partners.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (SHAPES[i], COLORS[(i + k) % len(COLORS)]) for i in range(len(SHAPES)) for k in (0, 3, 6)
)


# ---------------------------------------------------------------------------------------------
# Vocabulary: names and paraphrases of every factor value, used by captions and descriptions.
# ---------------------------------------------------------------------------------------------
# For each value: "names" (nouns for shapes, adjectives for the rest, usable inside a noun phrase)
# and "details" (phrases usable after "with" / "that has"), "clauses" (complete predicates).
PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "shape": {
        "circle": {
            "names": ("circle", "disc", "round disc"),
            "details": ("a round outline", "a smooth curved edge", "no corners at all"),
            "clauses": ("is perfectly round", "has a smooth round edge without corners"),
        },
        "square": {
            "names": ("square", "block"),
            "details": ("four equal sides", "four right-angled corners", "straight edges"),
            "clauses": ("has four equal straight sides", "is a box with four square corners"),
        },
        "triangle": {
            "names": ("triangle", "triangular shape"),
            "details": ("three straight sides", "three sharp corners", "a point at the top"),
            "clauses": ("has three sides and three corners", "points upwards like a pyramid"),
        },
        "diamond": {
            "names": ("diamond", "rhombus"),
            "details": (
                "four tilted sides",
                "a corner at the top and bottom",
                "a tilted square outline",
            ),
            "clauses": ("looks like a square standing on its corner", "has four slanted sides"),
        },
        "star": {
            "names": ("star", "five-pointed star"),
            "details": ("five sharp points", "pointed arms", "spiky tips"),
            "clauses": ("has five pointed arms", "is spiky with five tips"),
        },
        "cross": {
            "names": ("cross", "plus sign"),
            "details": (
                "four straight arms",
                "a vertical and a horizontal bar",
                "arms of equal length",
            ),
            "clauses": ("is made of two crossing bars", "looks like a plus sign"),
        },
        "heart": {
            "names": ("heart", "heart shape"),
            "details": (
                "two rounded lobes on top",
                "a point at the bottom",
                "a dip in the middle of the top",
            ),
            "clauses": ("has two round bumps and a pointed bottom", "looks like a love heart"),
        },
        "ring": {
            "names": ("ring", "hoop", "donut shape"),
            "details": ("a hole in the middle", "a round hollow centre", "a thick round band"),
            "clauses": ("is round and hollow in the middle", "looks like a donut with a hole"),
        },
        "crescent": {
            "names": ("crescent", "crescent moon"),
            "details": (
                "a curved outline",
                "two thin pointed horns",
                "one round side and one hollow side",
            ),
            "clauses": ("is curved like a new moon", "looks like a thin moon with two tips"),
        },
        "arrow": {
            "names": ("arrow", "upward arrow"),
            "details": (
                "a pointed head and a straight shaft",
                "a triangular tip on a stem",
                "a long stem",
            ),
            "clauses": ("points upwards with a head on a stem", "looks like a sign pointing up"),
        },
    },
    "color": {
        "red": {
            "names": ("red", "bright red", "scarlet"),
            "details": ("the colour of a tomato",),
            "clauses": ("is red like a fire truck", "is coloured a strong red"),
        },
        "orange": {
            "names": ("orange", "bright orange"),
            "details": ("the colour of a carrot",),
            "clauses": ("is orange like a carrot", "is coloured a warm orange"),
        },
        "yellow": {
            "names": ("yellow", "bright yellow", "lemon yellow"),
            "details": ("the colour of a lemon",),
            "clauses": ("is yellow like a lemon", "is coloured a sunny yellow"),
        },
        "green": {
            "names": ("green", "grass green"),
            "details": ("the colour of grass",),
            "clauses": ("is green like grass", "is coloured a leafy green"),
        },
        "cyan": {
            "names": ("cyan", "turquoise", "light blue"),
            "details": ("the colour of shallow water",),
            "clauses": ("is cyan like tropical water", "is coloured a bright turquoise"),
        },
        "blue": {
            "names": ("blue", "deep blue", "royal blue"),
            "details": ("the colour of deep sea",),
            "clauses": ("is a deep blue like the ocean", "is coloured a strong blue"),
        },
        "purple": {
            "names": ("purple", "violet"),
            "details": ("the colour of grapes",),
            "clauses": ("is purple like a grape", "is coloured a rich violet"),
        },
        "pink": {
            "names": ("pink", "light pink"),
            "details": ("the colour of candy floss",),
            "clauses": ("is pink like a flamingo", "is coloured a soft pink"),
        },
        "brown": {
            "names": ("brown", "dark brown"),
            "details": ("the colour of chocolate",),
            "clauses": ("is brown like wood", "is coloured a chocolate brown"),
        },
        "white": {
            "names": ("white", "snow white"),
            "details": ("the colour of snow",),
            "clauses": ("is white like snow", "is coloured a clean white"),
        },
    },
    "texture": {
        "solid": {
            "names": ("solid", "plain", "flat"),
            "details": ("a plain surface", "one flat colour"),
            "clauses": (
                "has a plain surface without any pattern",
                "is filled with one flat colour",
            ),
        },
        "striped": {
            "names": ("striped",),
            "details": ("stripes", "parallel lines", "bands of two shades"),
            "clauses": ("is covered in straight stripes", "has a pattern of parallel lines"),
        },
        "dotted": {
            "names": ("dotted", "spotted", "polka dot"),
            "details": ("dots", "a grid of spots"),
            "clauses": ("is covered in small round dots", "has a polka dot pattern"),
        },
        "checkered": {
            "names": ("checkered", "chequered", "checked"),
            "details": ("a checkerboard pattern", "little squares of two shades"),
            "clauses": ("is patterned like a chess board", "has a checked pattern of squares"),
        },
        "wavy": {
            "names": ("wavy", "rippled"),
            "details": ("wavy lines", "curvy ripples"),
            "clauses": ("is covered in wavy lines", "has a rippled pattern of curves"),
        },
    },
    "size": {
        "small": {
            "names": ("small", "tiny", "little"),
            "details": ("a small size",),
            "clauses": ("is small and fills little of the picture", "takes up only a small area"),
        },
        "medium": {
            "names": ("medium", "medium-sized", "mid-sized"),
            "details": ("a medium size",),
            "clauses": ("is of medium size", "fills part of the picture"),
        },
        "large": {
            "names": ("large", "big", "huge"),
            "details": ("a large size",),
            "clauses": ("is large and fills most of the picture", "takes up a big area"),
        },
    },
    "position": {
        "center": {
            "names": ("in the center", "in the middle", "at the centre"),
            "details": (),
            "clauses": ("sits in the middle of the picture",),
        },
        "top left": {
            "names": ("in the top left", "at the upper left", "in the top left corner"),
            "details": (),
            "clauses": ("sits in the upper left corner",),
        },
        "top right": {
            "names": ("in the top right", "at the upper right", "in the top right corner"),
            "details": (),
            "clauses": ("sits in the upper right corner",),
        },
        "bottom left": {
            "names": ("in the bottom left", "at the lower left", "in the bottom left corner"),
            "details": (),
            "clauses": ("sits in the lower left corner",),
        },
        "bottom right": {
            "names": ("in the bottom right", "at the lower right", "in the bottom right corner"),
            "details": (),
            "clauses": ("sits in the lower right corner",),
        },
    },
    "background": {
        "black": {
            "names": ("black", "dark", "pitch black"),
            "details": ("a dark background",),
            "clauses": ("stands on a black background",),
        },
        "gray": {
            "names": ("gray", "grey", "mid gray"),
            "details": ("a gray background",),
            "clauses": ("stands on a gray background",),
        },
        "white": {
            "names": ("white", "light", "bright white"),
            "details": ("a light background",),
            "clauses": ("stands on a white background",),
        },
    },
}


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


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _polygon(x: np.ndarray, y: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Signed distance-like value of a convex polygon (negative inside), vertices counter-clockwise
    in (x right, y up) coordinates."""
    value = np.full(x.shape, -np.inf, dtype=x.dtype)
    count = len(vertices)
    for k in range(count):
        (x0, y0), (x1, y1) = vertices[k], vertices[(k + 1) % count]
        nx, ny = y1 - y0, -(x1 - x0)  # outward normal for counter-clockwise order
        norm = math.hypot(nx, ny)
        value = np.maximum(value, ((x - x0) * nx + (y - y0) * ny) / norm)
    return value


def _box(x, y, half_w, half_h, cx=0.0, cy=0.0):
    return np.maximum(np.abs(x - cx) - half_w, np.abs(y - cy) - half_h)


def _disc(x, y, r, cx=0.0, cy=0.0):
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _shape_sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance-like field of a unit-sized shape (negative inside), y pointing up."""
    if shape == "circle":
        return _disc(x, y, 0.95)
    if shape == "square":
        return _box(x, y, 0.78, 0.78)
    if shape == "triangle":
        return _polygon(x, y, [(-0.95, -0.72), (0.95, -0.72), (0.0, 0.95)])
    if shape == "diamond":
        return (np.abs(x) * 1.0 + np.abs(y) * 0.8 - 0.92) / math.hypot(1.0, 0.8)
    if shape == "star":
        r = np.sqrt(x * x + y * y)
        theta = np.arctan2(y, x) - math.pi / 2
        # distance to a star outline, approximated in polar form: radius swings between 0.42 and 1
        t = np.abs(((theta / (2 * math.pi / 5)) % 1.0) - 0.5) * 2.0  # 1 at tips, 0 between
        return (r - (0.42 + 0.58 * t**2.2)) * 0.7
    if shape == "cross":
        return np.minimum(_box(x, y, 0.3, 0.95), _box(x, y, 0.95, 0.3))
    if shape == "heart":
        lobes = np.minimum(_disc(x, y, 0.5, -0.45, 0.35), _disc(x, y, 0.5, 0.45, 0.35))
        point = _polygon(x, y, [(-0.93, 0.22), (0.0, -0.95), (0.93, 0.22), (0.0, 0.45)])
        return np.minimum(lobes, point)
    if shape == "ring":
        r = np.sqrt(x * x + y * y)
        return np.maximum(r - 0.95, 0.52 - r)
    if shape == "crescent":
        return np.maximum(_disc(x, y, 0.95), -_disc(x, y, 0.78, 0.42, 0.12))
    if shape == "arrow":
        head = _polygon(x, y, [(-0.85, 0.05), (0.85, 0.05), (0.0, 0.97)])
        return np.minimum(head, _box(x, y, 0.26, 0.5, 0.0, -0.45))
    raise ValueError(f"unknown shape '{shape}'")


def _pattern(
    texture: str, u: np.ndarray, v: np.ndarray, period: np.ndarray, angle, phase
) -> np.ndarray:
    """Pattern weight in [0, 1] (0 = base colour, 1 = second shade) in image coordinates."""
    if texture == "solid":
        return np.zeros_like(u)
    ca, sa = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    p = period[:, None, None]
    a = (u * ca + v * sa) / p + phase[:, 0, None, None]
    b = (-u * sa + v * ca) / p + phase[:, 1, None, None]
    if texture == "striped":
        return (np.sin(2 * math.pi * a) > 0).astype(u.dtype)
    if texture == "wavy":
        return (np.sin(2 * math.pi * (a + 0.35 * np.sin(2 * math.pi * b * 0.5))) > 0).astype(
            u.dtype
        )
    if texture == "dotted":
        # axis-aligned grid of dots (the angle only shifts the grid)
        ga, gb = (
            (u / p + phase[:, 0, None, None]) % 1.0 - 0.5,
            (v / p + phase[:, 1, None, None]) % 1.0 - 0.5,
        )
        return ((ga * ga + gb * gb) < 0.32**2).astype(u.dtype)
    if texture == "checkered":
        ga, gb = (
            np.floor(u / p + phase[:, 0, None, None]),
            np.floor(v / p + phase[:, 1, None, None]),
        )
        return ((ga + gb) % 2).astype(u.dtype)
    raise ValueError(f"unknown texture '{texture}'")


def second_shade(rgb: np.ndarray) -> np.ndarray:
    """The pattern's second shade: darker for light colours, lighter for dark ones."""
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    dark = rgb * 0.45
    light = rgb + (1.0 - rgb) * 0.55
    return np.where((luma > 0.35)[:, None], dark, light)


def object_layer(scenes: Scenes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha N×S×S, colour N×S×S×3) of the objects, float32, anti-aliased over about a pixel."""
    n = len(scenes)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    u = np.broadcast_to(grid[None, None, :], (n, size, size))
    v = np.broadcast_to(grid[None, :, None], (n, size, size))
    r = scenes.radius.astype(np.float32)[:, None, None]
    ca = np.cos(scenes.angle).astype(np.float32)[:, None, None]
    sa = np.sin(scenes.angle).astype(np.float32)[:, None, None]
    dx = (u - scenes.cx.astype(np.float32)[:, None, None]) / r
    dy = -(v - scenes.cy.astype(np.float32)[:, None, None]) / r  # y up in shape coordinates
    x, y = dx * ca - dy * sa, dx * sa + dy * ca
    alpha = np.zeros((n, size, size), dtype=np.float32)
    pixel = (2.0 / size) / r  # one pixel in shape units
    for k, shape in enumerate(SHAPES):
        idx = np.nonzero(scenes.shape == k)[0]
        if idx.size:
            field = _shape_sdf(shape, x[idx], y[idx])
            alpha[idx] = np.clip(0.5 - field / pixel[idx], 0.0, 1.0)
    weight = np.zeros((n, size, size), dtype=np.float32)
    for k, texture in enumerate(TEXTURES):
        idx = np.nonzero(scenes.texture == k)[0]
        if idx.size and texture != "solid":
            weight[idx] = _pattern(
                texture,
                u[idx] - scenes.cx[idx, None, None].astype(np.float32),
                v[idx] - scenes.cy[idx, None, None].astype(np.float32),
                scenes.pattern_period[idx].astype(np.float32),
                scenes.pattern_angle[idx],
                scenes.pattern_phase[idx].astype(np.float32),
            )
    base = scenes.rgb.astype(np.float32)[:, None, None, :]
    shade = second_shade(scenes.rgb).astype(np.float32)[:, None, None, :]
    colour = base + (shade - base) * weight[..., None]
    return alpha, colour


def render(scenes: Scenes, size: int = 64, *, dtype=np.uint8) -> np.ndarray:
    """Render scenes to an N×S×S×3 array (uint8 by default, or float32 in [0, 1])."""
    alpha, colour = object_layer(scenes, size)
    image = scenes.bg_rgb.astype(np.float32)[:, None, None, :] * (1.0 - alpha[..., None])
    image += colour * alpha[..., None]
    if np.any(scenes.noise_std > 0):
        image += (
            _noise(scenes.noise_seed, (size, size, 3))
            * scenes.noise_std.astype(np.float32)[:, None, None, None]
        )
    image = np.clip(image, 0.0, 1.0)
    if dtype == np.uint8:
        return (image * 255.0 + 0.5).astype(np.uint8)
    return image.astype(dtype)


def _noise(seeds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise per image from its own seed (independent of batch composition)."""
    out = np.empty((len(seeds), *shape), dtype=np.float32)
    for i, seed in enumerate(seeds):
        out[i] = np.random.default_rng(int(seed)).standard_normal(shape, dtype=np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------
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
