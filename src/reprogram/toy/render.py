"""The vectorised renderer: a pure function of a :class:`~reprogram.toy.world.Scenes` batch.

Each shape is a distance-like field (negative inside), anti-aliased over about a pixel; textures
mix the object's colour with a second shade; sensor noise comes from each image's own seed, so the
same scenes give the same pixels whatever the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from reprogram.toy.vocabulary import SHAPES, TEXTURES

if TYPE_CHECKING:
    from reprogram.toy.world import Scenes


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
            sensor_noise(scenes.noise_seed, (size, size, 3))
            * scenes.noise_std.astype(np.float32)[:, None, None, None]
        )
    image = np.clip(image, 0.0, 1.0)
    if dtype == np.uint8:
        return (image * 255.0 + 0.5).astype(np.uint8)
    return image.astype(dtype)


def sensor_noise(seeds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise per image from its own seed (independent of batch composition)."""
    out = np.empty((len(seeds), *shape), dtype=np.float32)
    for i, seed in enumerate(seeds):
        out[i] = np.random.default_rng(int(seed)).standard_normal(shape, dtype=np.float32)
    return out
