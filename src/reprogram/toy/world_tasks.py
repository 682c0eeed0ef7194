"""World task sources: class sets that fix two or more factors, and samplers that render them
under a shift pretraining never saw (noise, inverted colours, rotated channels, clutter, tiny)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from reprogram.toy import world
from reprogram.toy.describe import ClassSpec
from reprogram.toy.render import sensor_noise

# A sampler draws images for one split: (class index per image, rng, image size) -> uint8 N×S×S×3
Sampler = Callable[[np.ndarray, np.random.Generator, int], np.ndarray]


def pair_classes(shapes: Sequence[str], colors: Sequence[str], **varies) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{c} {s}", {"shape": s, "color": c}, varies=dict(varies))
        for s, c in itertools.product(shapes, colors)
    )


def shape_texture_classes(
    shapes: Sequence[str], textures: Sequence[str], **varies
) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{t} {s}", {"shape": s, "texture": t}, varies=dict(varies))
        for s, t in itertools.product(shapes, textures)
    )


def triple_classes(shapes, colors, textures) -> tuple[ClassSpec, ...]:
    return tuple(
        ClassSpec(f"{t} {c} {s}", {"shape": s, "color": c, "texture": t})
        for s, c, t in itertools.product(shapes, colors, textures)
    )


def _scenes_for(classes: Sequence[ClassSpec], labels: np.ndarray, rng, **kwargs) -> world.Scenes:
    fixed: dict[str, list[str]] = {}
    names = sorted({k for spec in classes for k in spec.factors})
    for name in names:
        fixed[name] = [classes[i].factors[name] for i in labels]
    extra_fixed = kwargs.pop("fixed", {})
    fixed.update(extra_fixed)
    return world.sample_scenes(len(labels), rng, fixed=fixed, **kwargs)


def _clutter(scenes: world.Scenes, size: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """Render scenes with ``count`` small distractor objects behind the target, as float images."""
    n = len(scenes)
    image = np.broadcast_to(
        scenes.bg_rgb.astype(np.float32)[:, None, None, :], (n, size, size, 3)
    ).copy()
    for _ in range(count):
        other = world.sample_scenes(n, rng, radius_scale=0.45, noise_std=0.0)
        other = other.replace(cx=rng.uniform(-0.9, 0.9, n), cy=rng.uniform(-0.9, 0.9, n))
        alpha, colour = world.object_layer(other, size)
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    alpha, colour = world.object_layer(scenes, size)
    image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    image += (
        sensor_noise(scenes.noise_seed, (size, size, 3))
        * scenes.noise_std.astype(np.float32)[:, None, None, None]
    )
    return np.clip(image, 0, 1)


def world_sampler(classes: Sequence[ClassSpec], opts: dict) -> Sampler:
    """Images of world classes under the shift named by ``opts['shift']`` (and its settings)."""
    shift = opts.get("shift", "none")

    def sample(labels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
        kwargs = {}
        if shift == "noise":
            kwargs["noise_std"] = float(opts.get("noise_std", 0.35))
        if shift == "tiny":
            kwargs["radius_scale"] = float(opts.get("radius_scale", 0.4))
        if opts.get("sizes"):
            sizes = list(opts["sizes"])
            kwargs["fixed"] = {"size": [sizes[i] for i in rng.integers(0, len(sizes), len(labels))]}
        scenes = _scenes_for(classes, labels, rng, **kwargs)
        if shift == "clutter":
            image = _clutter(scenes, size, rng, int(opts.get("distractors", 6)))
        else:
            image = world.render(scenes, size, dtype=np.float32)
        if shift == "invert":
            image = 1.0 - image
        elif shift == "channels":
            image = image[..., list(opts.get("order", (2, 0, 1)))]
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    return sample
