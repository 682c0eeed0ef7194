"""Decoding images once into uint8 tensors, and the paper's augmentation done in batch.

* Evaluation images: Resize(S, bicubic) then CenterCrop(S), decoded once into a memory-mapped
  cache (keyed by files, their sizes and mtimes, and S), so repeated evaluations only run the model.
* Training images: Resize(S, bicubic) on the short side, kept whole on a uint8 canvas; then
  RandomResizedCrop(S) and a horizontal flip are applied to a whole batch at once
  (:func:`random_resized_crop_params`, :func:`reprogram.data.resize.crop_resize`) on the device
  the batch lives on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reprogram.data.readers import Sample
from reprogram.data.resize import crop_resize  # noqa: F401  (re-exported)
from reprogram.errors import ReprogramError
from reprogram.storage.cache import Cache
from reprogram.storage.files import atomic_write, atomic_write_json

# Bump when decoding changes what a file decodes to: decoded-image cache entries are keyed by it
# (and by Pillow's version, whose resampling may change between releases).
DECODE_VERSION = 2  # 2: 16-bit, 32-bit integer and float images rescaled to 8 bits


def _rescale_to_uint8(values: np.ndarray, floating: bool) -> np.ndarray:
    """One channel of a high-bit-depth image as uint8, by the range of its type.

    * integers (``I;16*``, ``I``) within 0..65535: 16-bit data, ``v / 257`` (65535 -> 255);
    * floats within [0, 1]: ``v * 255``; floats within [0, 255]: kept;
    * anything else (negative, wider, e.g. 32-bit sensor data): stretched from its min to max.

    Non-finite values count as 0. Values are rounded to the nearest integer.
    """
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if floating and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif floating and low >= 0.0 and high <= 255.0:
        scaled = values
    elif not floating and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB; 16-bit (``I;16``), 32-bit integer (``I``) and float (``F``)
    images are rescaled by their type's range (``convert('RGB')`` would clip them to white)."""
    if image.mode == "F" or image.mode == "I" or image.mode.startswith("I;16"):
        gray = _rescale_to_uint8(np.asarray(image), floating=image.mode == "F")
        return Image.fromarray(gray, "L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Open an image as 8-bit RGB (see :func:`to_rgb`), naming the file if it cannot be decoded.

    Every decode path (training, evaluation, predict, reports) goes through this function."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except FileNotFoundError as err:
        raise ReprogramError(f"image not found: {path}") from err
    except Exception as err:
        raise ReprogramError(f"cannot decode image {path}: {err}") from err


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(size) on a PIL image: short side to ``size``, bicubic."""
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_uint8_chw(image: Image.Image) -> np.ndarray:
    """A PIL RGB image as a writable, contiguous 3×H×W uint8 array."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


@dataclass
class DecodedImages:
    """uint8 images (N×3×H×W), labels, and the per-image valid size on the canvas."""

    pixels: torch.Tensor
    labels: torch.Tensor
    sizes: torch.Tensor  # N×2 (h, w) of the image content (the rest of the canvas is padding)
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_arrays(
        cls, pixels: np.ndarray, labels: list[int], skipped: list[str], sizes: list | None = None
    ) -> DecodedImages:
        """Wrap a uint8 N×3×H×W array; ``sizes`` (N (h, w)) defaults to the whole canvas."""
        whole = [tuple(pixels.shape[2:])] * len(labels)
        shapes = torch.tensor(whole if sizes is None else sizes, dtype=torch.long)
        return cls(
            torch.from_numpy(pixels),
            torch.tensor(labels, dtype=torch.long),
            shapes.reshape(len(labels), 2),
            skipped,
        )


def _decode_all(
    paths: list[str], work, skip_bad: bool, progress=None, into: np.ndarray | None = None
) -> tuple[list, list[str]]:
    """``work`` on every path in threads; ``progress(1)`` after each image; with ``into``, each
    result is written to its row of that array (no list of decoded images held at once)."""
    if into is not None:
        decode = work

        def work(item: tuple[int, str]) -> bool:
            into[item[0]] = decode(item[1])
            return True

    def safe(path):
        try:
            return work(path)
        except ReprogramError as err:
            if skip_bad:
                return None
            raise ReprogramError(
                f"{err} (to skip undecodable images: --set skip_bad_images=true)"
            ) from err

    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = []
        for result in pool.map(safe, paths if into is None else list(enumerate(paths))):
            results.append(result)
            if progress is not None:
                progress(1)
    skipped = [p for p, r in zip(paths, results, strict=True) if r is None]
    return results, skipped


def _cache_key(samples: list[Sample], size: int, kind: str) -> str:
    import PIL

    digest = hashlib.sha256(f"{kind}:{size}:v{DECODE_VERSION}:pil{PIL.__version__}".encode())
    for sample in samples:
        try:
            stat = os.stat(sample.path)
            digest.update(
                f"{sample.path}|{sample.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
            )
        except OSError:
            digest.update(f"{sample.path}|{sample.label}|missing\n".encode())
    return digest.hexdigest()[:32]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array)


def _load_center_cache(array_path: Path, meta_path: Path, size: int) -> DecodedImages | None:
    try:
        meta = json.loads(meta_path.read_text())
        labels, skipped = list(meta["labels"]), list(meta["skipped"])
        array = (
            np.load(array_path, mmap_mode="c") if labels else np.zeros((0, 3, size, size), np.uint8)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged entry: decode again
    if array.shape != (len(labels), 3, size, size):
        return None
    return DecodedImages.from_arrays(array, labels, skipped)


def decode_center(
    samples: list[Sample],
    size: int,
    *,
    skip_bad: bool = False,
    use_cache: bool = True,
    progress=None,
    cache: Cache | None = None,
) -> DecodedImages:
    """Resize(size) + CenterCrop(size) every image once; cached as a memory-mapped ``.npy``."""
    folder = ((cache or Cache.default()) if use_cache else Cache.disabled()).folder("images")
    use_cache = folder is not None
    key = _cache_key(samples, size, "center")
    array_path, meta_path = Path(folder or ".") / f"{key}.npy", Path(folder or ".") / f"{key}.json"
    if use_cache and array_path.is_file() and meta_path.is_file():
        cached = _load_center_cache(array_path, meta_path, size)
        # A cache made while skipping bad images is only valid for a caller who skips them too;
        # otherwise decode again, which names the first bad file.
        if cached is not None and (skip_bad or not cached.skipped):
            return cached

    def work(path: str) -> np.ndarray:
        return to_uint8_chw(center_crop(resize_short_side(load_rgb(path), size), size))

    array = np.empty((len(samples), 3, size, size), np.uint8)  # decoded into, image by image
    results, skipped = _decode_all([s.path for s in samples], work, skip_bad, progress, array)
    kept = [r is not None for r in results]
    if skipped:
        array = array[np.asarray(kept, dtype=bool)]
    labels = [s.label for s, ok in zip(samples, kept, strict=True) if ok]
    if use_cache:
        try:
            atomic_write(array_path, lambda tmp: _save_npy(tmp, array))
            atomic_write_json(meta_path, {"labels": labels, "skipped": skipped, "size": size})
        except OSError as err:  # an unwritable cache only costs decoding again next time
            warnings.warn(f"decoded-image cache not written ({err})", stacklevel=2)
    return DecodedImages.from_arrays(array, labels, skipped)


BUCKET_SPREAD = 1.1  # a size bucket's canvas is at most this much larger than its images


@dataclass
class BucketedImages:
    """Short-side-resized uint8 images on a few canvases ("buckets") of similar shapes, so that
    memory follows the images' own sizes: image ``i`` is row ``row[i]`` of its bucket."""

    buckets: list[torch.Tensor]  # each K×3×H×W, padded with the images' edges
    bucket: torch.Tensor  # N
    row: torch.Tensor  # N
    labels: torch.Tensor
    sizes: torch.Tensor  # N×2 (h, w) of each image's content
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buckets)


def size_buckets(shapes: list[tuple[int, int]], spread: float = BUCKET_SPREAD) -> list[list[int]]:
    """Indices of ``shapes`` (h, w) grouped so that each group's max h × max w is at most
    ``spread`` × the area of its smallest image (orientation first, then the long side)."""
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0] >= shapes[i][1], shapes[i]))
    groups: list[list[int]] = []
    low: tuple[int, int] | None = None
    top = (0, 0)
    for i in order:
        h, w = shapes[i]
        if groups and low is not None:
            height, width = max(top[0], h), max(top[1], w)
            if height * width <= spread * min(low[0] * low[1], h * w):
                groups[-1].append(i)
                top, low = (height, width), min(low, (h, w), key=lambda s: s[0] * s[1])
                continue
        groups.append([i])
        top = low = (h, w)
    return groups


def _canvas(images: list[np.ndarray]) -> np.ndarray:
    """Images on one canvas as large as the largest; the last row/column is repeated into the
    padding, so the bicubic kernel of a crop that ends at an image's edge sees the edge (as when
    cropping the image alone), not black."""
    height = max(r.shape[1] for r in images)
    width = max(r.shape[2] for r in images)
    canvas = np.empty((len(images), 3, height, width), np.uint8)
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        canvas[i, :, :h, :w] = image
        canvas[i, :, h:, :w] = image[:, h - 1 : h, :]
        canvas[i, :, :, w:] = canvas[i, :, :, w - 1 : w]
    return canvas


def _decode_short_side_arrays(
    samples: list[Sample], size: int, skip_bad: bool, progress=None
) -> tuple[list[np.ndarray], list[int], list[str]]:
    def work(path: str) -> np.ndarray:
        return to_uint8_chw(resize_short_side(load_rgb(path), size))

    results, skipped = _decode_all([s.path for s in samples], work, skip_bad, progress)
    kept = [(r, s.label) for r, s in zip(results, samples, strict=True) if r is not None]
    if not kept:
        raise ReprogramError("no training image could be decoded")
    return [r for r, _ in kept], [label for _, label in kept], skipped


def decode_short_side(samples: list[Sample], size: int, *, skip_bad: bool = False) -> DecodedImages:
    """Resize(size) on the short side, each image kept whole on one shared uint8 canvas."""
    images, labels, skipped = _decode_short_side_arrays(samples, size, skip_bad)
    sizes = [image.shape[1:] for image in images]
    return DecodedImages.from_arrays(_canvas(images), labels, skipped, sizes)


def decode_short_side_buckets(
    samples: list[Sample],
    size: int,
    *,
    skip_bad: bool = False,
    spread: float = BUCKET_SPREAD,
    progress=None,
) -> BucketedImages:
    """Resize(size) on the short side, the images kept whole on canvases of similar shapes
    (:func:`size_buckets`): at most ``spread`` × the bytes of the images themselves."""
    images, labels, skipped = _decode_short_side_arrays(samples, size, skip_bad, progress)
    shapes = [tuple(image.shape[1:]) for image in images]
    bucket = torch.zeros(len(images), dtype=torch.long)
    row = torch.zeros(len(images), dtype=torch.long)
    canvases = []
    for b, members in enumerate(size_buckets(shapes, spread)):
        canvases.append(torch.from_numpy(_canvas([images[i] for i in members])))
        for r, i in enumerate(members):
            bucket[i], row[i] = b, r
            images[i] = None  # free each decoded image once it is on its canvas
    return BucketedImages(
        canvases,
        bucket,
        row,
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(shapes, dtype=torch.long),
        skipped,
    )


def random_resized_crop_params(
    sizes: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop box sampling, for a batch: returns N×4 (top, left, h, w)."""
    n = sizes.shape[0]
    height, width = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = height * width
    target = area * torch.empty(n, attempts, dtype=torch.float64).uniform_(
        *scale, generator=generator
    )
    log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)
    found = ok.any(dim=1)
    h_pick, w_pick = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    # fallback: the whole image, clamped to the ratio range, centred
    in_ratio = (width / height).squeeze(1)
    fb_w = torch.where(
        in_ratio < ratio[0],
        width.squeeze(1),
        torch.where(
            in_ratio > ratio[1], torch.round(height.squeeze(1) * ratio[1]), width.squeeze(1)
        ),
    )
    fb_h = torch.where(
        in_ratio < ratio[0], torch.round(width.squeeze(1) / ratio[0]), height.squeeze(1)
    )
    h_final = torch.where(found, h_pick, fb_h)
    w_final = torch.where(found, w_pick, fb_w)
    u_top = torch.rand(n, generator=generator, dtype=torch.float64)
    u_left = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.where(
        found,
        torch.floor(u_top * (height.squeeze(1) - h_final + 1)),
        torch.div(height.squeeze(1) - h_final, 2, rounding_mode="floor"),
    )
    left = torch.where(
        found,
        torch.floor(u_left * (width.squeeze(1) - w_final + 1)),
        torch.div(width.squeeze(1) - w_final, 2, rounding_mode="floor"),
    )
    return torch.stack([top, left, h_final, w_final], dim=1).float()


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images to floats in [0, 1]."""
    return pixels.float().div_(255.0)
