"""Training images on the device and the batches drawn from them.

Augmented training keeps each image whole (short side resized) on one of a few size buckets
(:func:`reprogram.data.images.decode_short_side_buckets`), so memory follows the images' own
sizes; a batch is cropped and resized bucket by bucket, in one batched call per bucket present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from reprogram.data.images import (
    BucketedImages,
    DecodedImages,
    as_float,
    crop_resize,
    decode_center,
    decode_short_side_buckets,
    random_resized_crop_params,
)

if TYPE_CHECKING:
    from reprogram.engine.setup import RunParts


@dataclass
class TrainData:
    """Training images ready for batching on the device.

    ``pixels`` is one uint8 N×3×H×W tensor (a canvas when augmenting), or a list of bucket
    canvases with ``bucket``/``row`` (CPU, N each) saying where image ``i`` lies.
    """

    pixels: torch.Tensor | Sequence[torch.Tensor]
    sizes: torch.Tensor  # N×2 valid (h, w)
    labels: torch.Tensor
    augment: bool
    image_size: int
    skipped: list[str]
    bucket: torch.Tensor | None = None
    row: torch.Tensor | None = None
    buckets: list[torch.Tensor] = field(init=False, repr=False)

    @classmethod
    def centred(cls, decoded: DecodedImages, size: int, device: torch.device) -> TrainData:
        """Centre-cropped images (no augmentation) moved to ``device``."""
        return cls(
            decoded.pixels.to(device),
            decoded.sizes,
            decoded.labels.to(device),
            False,
            size,
            decoded.skipped,
        )

    @classmethod
    def bucketed(cls, images: BucketedImages, size: int, device: torch.device) -> TrainData:
        """Whole images on size buckets, cropped at random per batch, moved to ``device``."""
        return cls(
            [canvas.to(device) for canvas in images.buckets],
            images.sizes,
            images.labels.to(device),
            True,
            size,
            images.skipped,
            images.bucket,
            images.row,
        )

    def __post_init__(self) -> None:
        self.buckets = [self.pixels] if torch.is_tensor(self.pixels) else list(self.pixels)
        count = len(self.labels)
        if self.bucket is None:
            self.bucket = torch.zeros(count, dtype=torch.long)
            self.row = torch.arange(count)
        self.bucket, self.row = self.bucket.cpu(), self.row.cpu()

    @property
    def device(self) -> torch.device:
        return self.buckets[0].device

    @property
    def nbytes(self) -> int:
        """Bytes of the stored training pixels."""
        return sum(b.numel() * b.element_size() for b in self.buckets)

    def _pixels(self, bucket: int, rows: torch.Tensor) -> torch.Tensor:
        canvas = self.buckets[bucket]
        return canvas.index_select(0, rows.to(canvas.device, non_blocking=True))

    def batch(
        self, index: torch.Tensor, generator: torch.Generator, part: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``index[part]``; augmentation is drawn for the whole ``index``
        so that a process's share of a global batch is the same as in single-process training."""
        device = self.device
        local = index[part]
        labels = self.labels.index_select(0, local.to(self.labels.device, non_blocking=True))
        if self.augment:
            boxes = random_resized_crop_params(self.sizes[index], generator)[part]
            flips = (torch.rand(len(index), generator=generator) < 0.5)[part]
        if len(local) == 0:  # no share of a last batch smaller than the world
            return torch.zeros(0, 3, self.image_size, self.image_size, device=device), labels
        if len(self.buckets) == 1:
            if not self.augment:
                return as_float(self._pixels(0, self.row[local])), labels
            return self._crop(0, self.row[local], boxes, flips), labels
        buckets = self.bucket[local]
        images = torch.empty(len(local), 3, self.image_size, self.image_size, device=device)
        for b in torch.unique(buckets).tolist():  # CPU tensors: no device synchronisation
            where = (buckets == b).nonzero().squeeze(1)
            rows = self.row[local[where]]
            part_images = (
                self._crop(b, rows, boxes[where], flips[where])
                if self.augment
                else as_float(self._pixels(b, rows))
            )
            images.index_copy_(0, where.to(device, non_blocking=True), part_images)
        return images, labels

    def _crop(
        self, bucket: int, rows: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor
    ) -> torch.Tensor:
        """Images ``rows`` of a bucket, cropped and resized where they lie (CPU boxes)."""
        return crop_resize(self.buckets[bucket], boxes, self.image_size, flips, index=rows)


def load_train_data(parts: RunParts, device: torch.device) -> TrainData:
    """Decode a run's training images (bucketed whole images when augmenting) onto ``device``."""
    size = parts.model.image_size
    samples = parts.splits.train
    skip = parts.config.data.skip_bad_images
    if not parts.config.data.augment:
        return TrainData.centred(decode_center(samples, size, skip_bad=skip), size, device)
    bucketed = decode_short_side_buckets(samples, size, skip_bad=skip)
    return TrainData.bucketed(bucketed, size, device)
