"""Decoding images once into uint8 tensors, and the paper's augmentation done in batch.

* Evaluation images: Resize(S, bicubic) then CenterCrop(S), decoded once into a memory-mapped
  cache (keyed by files, their sizes and mtimes, and S), so repeated evaluations only run the model.
* Training images: Resize(S, bicubic) on the short side, kept whole on a uint8 canvas; then
  RandomResizedCrop(S) and a horizontal flip are applied to a whole batch at once
  (:func:`random_resized_crop_flip`) on the device the batch lives on.
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
import torch.nn.functional as F
from PIL import Image

from reprogram.data.readers import Sample
from reprogram.errors import ReprogramError
from reprogram.io import atomic_write, atomic_write_json, cache_dir


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB, naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
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


def _decode_all(paths: list[str], work, skip_bad: bool) -> tuple[list, list[str]]:
    def safe(path: str):
        try:
            return work(path)
        except ReprogramError:
            if skip_bad:
                return None
            raise

    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(safe, paths))
    skipped = [p for p, r in zip(paths, results, strict=True) if r is None]
    return results, skipped


def _cache_key(samples: list[Sample], size: int, kind: str) -> str:
    digest = hashlib.sha256(f"{kind}:{size}".encode())
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
    return DecodedImages(
        torch.from_numpy(array),
        torch.tensor(labels, dtype=torch.long),
        torch.full((len(labels), 2), size, dtype=torch.long),
        skipped,
    )


def decode_center(
    samples: list[Sample], size: int, *, skip_bad: bool = False, use_cache: bool = True
) -> DecodedImages:
    """Resize(size) + CenterCrop(size) every image once; cached as a memory-mapped ``.npy``."""
    folder = cache_dir("images")
    key = _cache_key(samples, size, "center")
    array_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if use_cache and array_path.is_file() and meta_path.is_file():
        cached = _load_center_cache(array_path, meta_path, size)
        # A cache made while skipping bad images is only valid for a caller who skips them too;
        # otherwise decode again, which names the first bad file.
        if cached is not None and (skip_bad or not cached.skipped):
            return cached

    def work(path: str) -> np.ndarray:
        return to_uint8_chw(center_crop(resize_short_side(load_rgb(path), size), size))

    results, skipped = _decode_all([s.path for s in samples], work, skip_bad)
    kept = [(r, s.label) for r, s in zip(results, samples, strict=True) if r is not None]
    array = np.stack([r for r, _ in kept]) if kept else np.zeros((0, 3, size, size), np.uint8)
    labels = [label for _, label in kept]
    if use_cache:
        try:
            atomic_write(array_path, lambda tmp: _save_npy(tmp, array))
            atomic_write_json(meta_path, {"labels": labels, "skipped": skipped, "size": size})
        except OSError as err:  # an unwritable cache only costs decoding again next time
            warnings.warn(f"decoded-image cache not written ({err})", stacklevel=2)
    return DecodedImages(
        torch.from_numpy(array),
        torch.tensor(labels, dtype=torch.long),
        torch.full((len(labels), 2), size, dtype=torch.long),
        skipped,
    )


def decode_short_side(samples: list[Sample], size: int, *, skip_bad: bool = False) -> DecodedImages:
    """Resize(size) on the short side, each image kept whole on a shared uint8 canvas."""

    def work(path: str) -> np.ndarray:
        return to_uint8_chw(resize_short_side(load_rgb(path), size))

    results, skipped = _decode_all([s.path for s in samples], work, skip_bad)
    kept = [(r, s.label) for r, s in zip(results, samples, strict=True) if r is not None]
    if not kept:
        raise ReprogramError("no training image could be decoded")
    height = max(r.shape[1] for r, _ in kept)
    width = max(r.shape[2] for r, _ in kept)
    canvas = np.zeros((len(kept), 3, height, width), np.uint8)
    sizes = []
    for i, (image, _) in enumerate(kept):
        h, w = image.shape[1:]
        canvas[i, :, :h, :w] = image
        # Repeat the last row/column into the padding: the bicubic kernel of a crop that ends at
        # the image's edge then sees the edge (as when cropping the image alone), not black.
        canvas[i, :, h:, :w] = image[:, h - 1 : h, :]
        canvas[i, :, :, w:] = canvas[i, :, :, w - 1 : w]
        sizes.append((h, w))
    return DecodedImages(
        torch.from_numpy(canvas),
        torch.tensor([label for _, label in kept], dtype=torch.long),
        torch.tensor(sizes, dtype=torch.long),
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


def crop_resize(
    canvas: torch.Tensor, boxes: torch.Tensor, out_size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop each box (top, left, h, w in canvas pixels) and resize it to ``out_size`` (bicubic),
    mirroring where ``flip`` is true, in one batched ``grid_sample``. Returns floats in [0, 1]."""
    n, _, height, width = canvas.shape
    boxes = boxes.to(canvas.device)
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(n, 2, 3, device=canvas.device)
    sign = torch.ones(n, device=canvas.device)
    if flip is not None:
        sign = torch.where(flip.to(canvas.device), -1.0, 1.0)
    theta[:, 0, 0] = sign * w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    images = canvas.float().div_(255.0)
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def random_resized_crop_flip(
    canvas: torch.Tensor, sizes: torch.Tensor, out_size: int, generator: torch.Generator
) -> torch.Tensor:
    """The paper's training augmentation (RandomResizedCrop + RandomHorizontalFlip) for a batch."""
    boxes = random_resized_crop_params(sizes.cpu(), generator)
    flip = torch.rand(len(sizes), generator=generator) < 0.5
    return crop_resize(canvas, boxes, out_size, flip)


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images to floats in [0, 1]."""
    return pixels.float().div_(255.0)


def save_png(array: np.ndarray, path: str | Path) -> None:
    Image.fromarray(array.transpose(1, 2, 0)).save(path)
