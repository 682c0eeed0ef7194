"""Image decoding and the batched training augmentation (crop, resize, flip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reprogram.data.images import (
    as_float,
    center_crop,
    crop_resize,
    decode_short_side,
    load_rgb,
    random_resized_crop_params,
    resize_short_side,
    to_uint8_chw,
)
from reprogram.data.readers import Sample
from reprogram.data.resize import resize_taps
from reprogram.errors import ReprogramError

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels


def random_uint8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


# -- crop_resize --------------------------------------------------------------------------------
def test_full_box_reproduces_the_image():
    canvas = random_uint8(3, 3, 24, 24)
    boxes = torch.tensor([[0.0, 0.0, 24.0, 24.0]] * 3)
    out = crop_resize(canvas, boxes, 24)
    torch.testing.assert_close(out, as_float(canvas), atol=1e-5, rtol=0)


def test_flip_mirrors():
    canvas = random_uint8(2, 3, 16, 16, seed=1)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2)
    out = crop_resize(canvas, boxes, 16, flip=torch.tensor([True, False]))
    torch.testing.assert_close(out[0], as_float(canvas[0]).flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], as_float(canvas[1]), atol=1e-5, rtol=0)


def test_crop_is_the_box_resized_bicubic():
    canvas = random_uint8(1, 3, 20, 30, seed=2)
    # the box cut out, then PyTorch's antialiased bicubic resize (up and down)
    for box, size in (([4.0, 6.0, 12.0, 12.0], 24), ([1.0, 3.0, 18.0, 25.0], 7)):
        out = crop_resize(canvas, torch.tensor([box]), size)
        top, left, h, w = (int(v) for v in box)
        crop = as_float(canvas[:, :, top : top + h, left : left + w])
        wide = F.interpolate(crop, size=(h, size), mode="bicubic", antialias=True).clamp(0, 1)
        expected = F.interpolate(wide, size=(size, size), mode="bicubic", antialias=True)
        torch.testing.assert_close(out, expected.clamp(0, 1), atol=1e-6, rtol=0)


def test_padding_does_not_leak_into_crops(tmp_path):
    """Images of different shapes share a canvas; a crop at an image's edge sees only the image."""
    paths = []
    for i, (height, width) in enumerate(((24, 16), (16, 24))):  # portrait, landscape
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.asarray(random_uint8(height, width, 3, seed=i))).save(path)
        paths.append(str(path))
    decoded = decode_short_side([Sample(p, 0) for p in paths], 16)
    assert decoded.pixels.shape == (2, 3, 24, 24)
    assert decoded.sizes.tolist() == [[24, 16], [16, 24]]
    box = torch.tensor([[8.0, 0.0, 16.0, 16.0], [0.0, 8.0, 16.0, 16.0]])  # bottom, right ends
    out = crop_resize(decoded.pixels, box, 10)
    for i in range(2):
        h, w = decoded.sizes[i].tolist()
        alone = crop_resize(decoded.pixels[i : i + 1, :, :h, :w], box[i : i + 1], 10)
        torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=0)


# -- random_resized_crop_params ----------------------------------------------------------------
def test_boxes_inside_the_image_and_deterministic():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.cat(
        [
            torch.randint(8, 400, (500, 2), generator=gen),
            torch.tensor([[10, 400], [400, 10], [1, 1], [2, 300], [224, 224]]),  # extreme shapes
        ]
    )
    boxes = random_resized_crop_params(sizes, torch.Generator().manual_seed(1))
    top, left, h, w = boxes.unbind(1)
    assert boxes.shape == (len(sizes), 4)
    assert torch.equal(boxes, boxes.round())
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    again = random_resized_crop_params(sizes, torch.Generator().manual_seed(1))
    other = random_resized_crop_params(sizes, torch.Generator().manual_seed(2))
    assert torch.equal(boxes, again) and not torch.equal(boxes, other)
    area = (h * w) / (sizes[:, 0] * sizes[:, 1])
    aspect = sizes[:, 1] / sizes[:, 0]
    usual = (aspect >= 3 / 4) & (aspect <= 4 / 3) & (sizes.min(dim=1).values >= 8)
    assert usual.sum() > 50
    assert area[usual].min() >= 0.07 and area.max() <= 1.0  # scale (0.08, 1), up to rounding


def test_fallback_box_matches_torchvision():
    transforms = pytest.importorskip("torchvision.transforms")
    # no crop of the asked scale and ratio fits: the centred fallback
    for height, width in ((10, 200), (200, 10), (30, 31), (7, 9)):
        boxes = random_resized_crop_params(
            torch.tensor([[height, width]]), torch.Generator().manual_seed(0), scale=(1.0, 1.0)
        )
        image = torch.zeros(1, height, width)
        torch.manual_seed(0)
        expected = transforms.RandomResizedCrop.get_params(
            image, scale=(1.0, 1.0), ratio=(3 / 4, 4 / 3)
        )
        if height / width in (30 / 31, 7 / 9):  # square-ish: the whole image in both
            expected = (0, 0, height, width)
        assert boxes[0].tolist() == [float(x) for x in expected], (height, width)


# -- decoding -----------------------------------------------------------------------------------
def test_resize_and_center_crop_match_torchvision(tmp_path):
    transforms = pytest.importorskip("torchvision.transforms")
    image = Image.fromarray(np.asarray(random_uint8(37, 53, 3, seed=4)))
    ours = to_uint8_chw(center_crop(resize_short_side(image, 24), 24))
    reference = transforms.Compose(
        [
            transforms.Resize(24, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(24),
        ]
    )(image)
    assert ours.shape == (3, 24, 24)
    assert np.array_equal(ours, np.asarray(reference).transpose(2, 0, 1))


def test_load_rgb_converts_and_names_bad_files(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "gray.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    Image.new("P", (5, 4)).save(tmp_path / "palette.gif")
    for name in ("gray.png", "rgba.png", "palette.gif"):
        image = load_rgb(str(tmp_path / name))
        assert image.mode == "RGB" and image.size == (5, 4)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ReprogramError, match=r"cannot decode image .*bad\.jpg"):
        load_rgb(str(tmp_path / "bad.jpg"))
    with pytest.raises(ReprogramError, match=r"image not found: .*missing\.png"):
        load_rgb(str(tmp_path / "missing.png"))
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.asarray(random_uint8(40, 40, 3))).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:200])
    with pytest.raises(ReprogramError, match=r"truncated\.png"):
        load_rgb(str(truncated))


def test_as_float_range():
    pixels = torch.tensor([[0, 255, 51]], dtype=torch.uint8)
    assert as_float(pixels).flatten().tolist() == pytest.approx([0.0, 1.0, 0.2])


# -- crop_resize against torchvision ------------------------------------------------------------
def _edge_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    return [
        (0, 0, height, width),  # the whole image
        (0, 0, 1, 1),  # one pixel
        (height - 1, width - 1, 1, 1),  # the last pixel
        (0, width - 5, height, 5),  # a strip at the right edge
        (height - 3, 0, 3, width),  # a strip at the bottom edge
    ]


def test_crop_resize_matches_torchvision_resized_crop():
    v2 = pytest.importorskip("torchvision.transforms.v2.functional")
    from torchvision.transforms import InterpolationMode

    height, width, size = 48, 61, 32
    canvas = random_uint8(40, 3, height, width, seed=7)
    sizes = torch.tensor([[height, width]] * 34)
    boxes = random_resized_crop_params(sizes, torch.Generator().manual_seed(3)).long().tolist()
    boxes += _edge_boxes(height, width)
    boxes += [(2, 3, 48 - 2, 61 - 3)]  # larger than the output: a downscale
    flip = torch.arange(len(boxes)) % 3 == 0
    out = crop_resize(canvas, torch.tensor(boxes, dtype=torch.float32), size, flip)
    worst = 0.0
    for i, (top, left, h, w) in enumerate(boxes):
        expected = v2.resized_crop(
            canvas[i], top, left, h, w, [size, size], InterpolationMode.BICUBIC, antialias=True
        )
        if flip[i]:
            expected = v2.horizontal_flip(expected)
        worst = max(worst, (out[i] - as_float(expected)).abs().max().item())
    assert worst <= 2 / 255


def test_pixels_outside_the_box_do_not_matter():
    canvas = random_uint8(6, 3, 30, 40, seed=8)
    boxes = torch.tensor(
        [
            [0, 0, 30, 40],
            [5, 7, 11, 13],
            [0, 0, 4, 40],
            [29, 39, 1, 1],
            [10, 0, 20, 9],
            [3, 30, 27, 10],
        ],
        dtype=torch.float32,
    )
    flip = torch.tensor([False, True, False, True, False, True])
    out = crop_resize(canvas, boxes, 16, flip)
    changed = random_uint8(6, 3, 30, 40, seed=9)
    for i, (top, left, h, w) in enumerate(boxes.long().tolist()):
        changed[i, :, top : top + h, left : left + w] = canvas[i, :, top : top + h, left : left + w]
    assert not torch.equal(changed[1], canvas[1])
    torch.testing.assert_close(crop_resize(changed, boxes, 16, flip), out, atol=0, rtol=0)


def test_flip_of_a_crop_mirrors_the_crop():
    canvas = random_uint8(2, 3, 20, 30, seed=10)
    boxes = torch.tensor([[2.0, 5.0, 15.0, 21.0]] * 2)
    out = crop_resize(canvas, boxes, 12, flip=torch.tensor([True, False]))
    torch.testing.assert_close(out[0:1], crop_resize(canvas[0:1], boxes[:1], 12).flip(-1))
    torch.testing.assert_close(out[1:2], crop_resize(canvas[1:2], boxes[:1], 12))


# -- crop_resize as matrix products --------------------------------------------------------------
def _interpolate_oracle(canvas, boxes, size, flip):
    """The previous implementation: each box cut out, two ``F.interpolate`` calls."""
    out = []
    for i, (top, left, h, w) in enumerate(boxes.long().tolist()):
        crop = as_float(canvas[i : i + 1, :, top : top + h, left : left + w])
        wide = F.interpolate(crop, size=(h, size), mode="bicubic", antialias=True).clamp(0, 1)
        tall = F.interpolate(wide, size=(size, size), mode="bicubic", antialias=True)
        out.append(tall.flip(-1) if flip[i] else tall)
    return torch.cat(out).clamp(0, 1)


@pytest.mark.parametrize("banded", [True, False])
@pytest.mark.parametrize("size", [7, 40, 80])  # one block, several, a partial last block
def test_matrix_resize_equals_interpolate(banded, size):
    height, width = 50, 67
    sizes = torch.tensor([[height, width]] * 24)
    boxes = random_resized_crop_params(sizes, torch.Generator().manual_seed(size)).long().tolist()
    boxes += _edge_boxes(height, width) + [(0, 0, 2, 67), (13, 20, 37, 1), (0, 0, 50, 67)]
    canvas = random_uint8(len(boxes), 3, height, width, seed=11)
    boxes = torch.tensor(boxes, dtype=torch.float32)
    flip = torch.arange(len(boxes)) % 2 == 1
    out = crop_resize(canvas, boxes, size, flip, banded=banded)
    expected = _interpolate_oracle(canvas, boxes, size, flip)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length,size", [(1, 5), (7, 7), (9, 40), (298, 192), (61, 24), (500, 7)])
def test_resize_taps_are_pytorchs_weights(length, size):
    first, weights = resize_taps(torch.tensor([length]), size)
    dense = torch.zeros(size, length)
    for k in range(weights.shape[-1]):  # tap k of every output pixel, where it has weight
        column = (first[0] + k).clamp(max=length - 1)
        dense[torch.arange(size), column] += weights[0, :, k]
    impulses = torch.eye(length).view(1, 1, length, length)  # row j: a unit at pixel j
    reference = F.interpolate(impulses, size=(length, size), mode="bicubic", antialias=True)
    torch.testing.assert_close(dense.t(), reference[0, 0], atol=1e-6, rtol=0)
    assert (weights.sum(-1) - 1).abs().max() < 1e-6


@pytest.mark.parametrize("banded", [True, False])
def test_matrix_resize_reads_only_the_box_and_the_indexed_rows(banded):
    canvas = random_uint8(5, 3, 30, 40, seed=12)
    boxes = torch.tensor(
        [[0, 0, 30, 40], [5, 7, 11, 13], [29, 0, 1, 40], [0, 39, 30, 1], [3, 30, 27, 10]],
        dtype=torch.float32,
    )
    flip = torch.tensor([False, True, False, True, True])
    rows = torch.tensor([4, 0, 2, 2, 1])
    out = crop_resize(canvas, boxes, 70, flip, index=rows, banded=banded)
    gathered = crop_resize(canvas[rows], boxes, 70, flip, banded=banded)
    torch.testing.assert_close(out, gathered, atol=0, rtol=0)  # the same products on equal windows
    # Only box i of image rows[i] reaches output i: the same batch (same boxes, so the same
    # matrix shapes and products, exact), on a canvas that is noise everywhere else. Not a
    # batch of one: the BLAS may split a batched product otherwise (1e-7 with MKL's AVX2 path).
    for i, row in enumerate(rows.tolist()):
        top, left, h, w = boxes[i].long().tolist()
        noisy = random_uint8(5, 3, 30, 40, seed=14 + i)
        noisy[row, :, top : top + h, left : left + w] = canvas[
            row, :, top : top + h, left : left + w
        ]
        assert not torch.equal(noisy[row], canvas[row]) or (h, w) == (30, 40)
        again = crop_resize(noisy, boxes, 70, flip, rows, banded=banded)
        torch.testing.assert_close(again[i], out[i], atol=0, rtol=0)
        assert not torch.equal(again, out)  # the other outputs did see the noise


@pytest.mark.parametrize("banded", [True, False])
def test_matrix_resize_is_fp32_under_a_callers_autocast(banded):
    canvas = random_uint8(3, 3, 30, 40, seed=15)
    boxes = torch.tensor([[0, 0, 30, 40], [5, 7, 11, 13], [3, 2, 27, 35]], dtype=torch.float32)
    expected = crop_resize(canvas, boxes, 48, banded=banded)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = crop_resize(canvas, boxes, 48, banded=banded)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
