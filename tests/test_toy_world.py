"""The procedural world: deterministic, fast, any size, captions that tell the truth."""

import time

import numpy as np
import pytest

from reprogram.toy import world


def test_same_seed_same_pixels_and_captions():
    a = world.sample_scenes(40, 3)
    b = world.sample_scenes(40, 3)
    assert np.array_equal(world.render(a, 32), world.render(b, 32))
    ca, ma = world.captions_for(a, np.random.default_rng(1))
    cb, mb = world.captions_for(b, np.random.default_rng(1))
    assert ca == cb and np.array_equal(ma, mb)
    c = world.sample_scenes(40, 4)
    assert not np.array_equal(world.render(a, 32), world.render(c, 32))


def test_a_subset_renders_the_same_pixels():
    scenes = world.sample_scenes(10, 0)
    full = world.render(scenes, 24)
    part = world.render(scenes.subset(slice(3, 6)), 24)
    assert np.array_equal(full[3:6], part)


@pytest.mark.parametrize("size", [8, 17, 64, 100])
def test_any_image_size(size):
    images = world.render(world.sample_scenes(3, 0), size)
    assert images.shape == (3, size, size, 3) and images.dtype == np.uint8
    floats = world.render(world.sample_scenes(3, 0), size, dtype=np.float32)
    assert floats.dtype == np.float32 and floats.min() >= 0.0 and floats.max() <= 1.0


def test_speed_sanity_2000_images():
    start = time.perf_counter()
    scenes = world.sample_scenes(2000, 0)
    images = world.render(scenes, 32)
    elapsed = time.perf_counter() - start
    assert images.shape == (2000, 32, 32, 3)
    print(f"2000 images at 32 px in {elapsed:.2f}s ({2000 / elapsed:.0f}/s)")


def test_fixed_factors_and_excluded_pairs():
    scenes = world.sample_scenes(
        300, 1, fixed={"shape": "star"}, exclude_pairs=[("star", "red"), ("star", "blue")]
    )
    assert set(scenes.shape.tolist()) == {world.SHAPES.index("star")}
    assert not np.isin(scenes.color, [world.COLORS.index("red"), world.COLORS.index("blue")]).any()
    free = world.sample_scenes(2000, 2, exclude_pairs=world.HELD_OUT_PAIRS)
    pairs = {
        (world.SHAPES[s], world.COLORS[c]) for s, c in zip(free.shape, free.color, strict=True)
    }
    assert not pairs & set(world.HELD_OUT_PAIRS)
    assert len(pairs) == len(world.SHAPES) * len(world.COLORS) - len(world.HELD_OUT_PAIRS)


def test_held_out_pairs_cover_every_shape_and_colour():
    assert len(world.HELD_OUT_PAIRS) == 30 == len(set(world.HELD_OUT_PAIRS))
    for shape in world.SHAPES:
        assert sum(s == shape for s, _ in world.HELD_OUT_PAIRS) == 3
    for colour in world.COLORS:
        assert sum(c == colour for _, c in world.HELD_OUT_PAIRS) == 3


def test_white_object_never_on_white_background():
    scenes = world.sample_scenes(3000, 5)
    white = (scenes.color == world.COLORS.index("white")) & (
        scenes.background == world.BACKGROUNDS.index("white")
    )
    assert not white.any()


def test_objects_differ_by_shape_in_pixels():
    fixed = {
        "color": "red",
        "texture": "solid",
        "size": "large",
        "position": "center",
        "background": "black",
    }
    masks = []
    for shape in world.SHAPES:
        image = world.render(
            world.sample_scenes(1, 0, fixed={**fixed, "shape": shape}, noise_std=0.0), 48
        )
        masks.append(image[0, :, :, 0] > 120)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).mean() > 0.02, (world.SHAPES[i], world.SHAPES[j])


def _all_phrases(factor, value):
    return [p for key in ("names", "details", "clauses") for p in world.PHRASES[factor][value][key]]


def test_captions_name_what_the_mask_says():
    rng = np.random.default_rng(0)
    scenes = world.sample_scenes(200, 0)
    texts, mask = world.captions_for(scenes, rng)
    assert len(texts) == 200 and mask.shape == (200, 6)
    assert (mask[:, 0] | mask[:, 1]).all()  # shape or colour always named
    for i, text in enumerate(texts):
        labels = scenes.labels(i)
        if mask[i, 0]:
            names = _all_phrases("shape", labels["shape"])
            assert any(name in text for name in names), text
        if mask[i, 1]:
            names = _all_phrases("color", labels["color"])
            assert any(name in text for name in names), text
    match = world.caption_match(scenes.factors(), mask)
    assert match.diagonal().all()


def test_caption_match_is_exact():
    factors = np.array([[0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    mask = np.zeros((3, 6), dtype=bool)
    mask[:, 1] = True  # every caption names only the colour
    match = world.caption_match(factors, mask)
    # caption 0 ("colour 0") describes images 0 and 2, not image 1
    assert match[:, 0].tolist() == [True, False, True]
