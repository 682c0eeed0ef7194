"""RandomResizedCrop's crop-and-resize for a batch, as matrix products.

Each box is resized with PyTorch's antialiased bicubic kernel (``_upsample_bicubic2d_aa``, as
PIL's): cubic convolution with a = -0.5, support 2·max(scale, 1), taps from
``trunc(centre ± support + 0.5)`` clipped to the box, each output pixel's weights normalised.
Those weights form one matrix per image and axis, zero outside the box, so nothing outside the
box reaches the output. The image is resized horizontally, clamped to [0, 1] (as a uint8
intermediate is), then vertically; a flip reverses the horizontal matrix's rows.

* On a CPU the matrices are banded: output pixels are taken in blocks of :data:`BLOCK`, each
  block reads one window of the image, and all blocks of an image are one ``bmm`` over strided
  views (no gather), so the work is proportional to the box, not to the canvas.
* Elsewhere (GPU) the whole batch is two batched products over a window of the canvas.
"""

from __future__ import annotations

import math

import torch

BLOCK = 32  # output pixels per banded block (CPU)
CUBIC_A = -0.5  # PIL's and PyTorch's antialiased bicubic


def _cubic(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    near = ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1
    far = ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_taps(length: torch.Tensor, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's antialiased bicubic taps resizing ``length`` (N) pixels to ``out_size``.

    Returns the first tap (N×S, long, in box pixels) and the weights (N×S×K, float32) of taps
    ``first + k``; taps past the box have weight 0. The arithmetic follows PyTorch's float32
    kernel (scale, centre and filter in float32), so the weights agree to float32 rounding."""
    f32 = torch.float32
    scale = length.to(f32) / out_size
    wide = scale.clamp(min=1.0)
    support = 2.0 * wide
    taps = int(2 * math.ceil(float(support.max())) + 1)
    centre = (scale.double()[:, None] * (torch.arange(out_size, dtype=torch.float64) + 0.5)).to(f32)
    support64 = support.double()[:, None]
    first = (centre.double() - support64 + 0.5).trunc().clamp(min=0)
    end = torch.minimum((centre.double() + support64 + 0.5).trunc(), length.double()[:, None])
    end = torch.minimum(end, first + (2 * support64.ceil() + 1))  # PyTorch's tap limit
    position = first[..., None] + torch.arange(taps, dtype=torch.float64)
    offset = (position.to(f32) - centre[..., None]).double() + 0.5
    weights = _cubic((offset * (1.0 / wide).double()[:, None, None]).to(f32))
    weights = torch.where(position < end[..., None], weights, 0.0)
    total = weights.sum(-1, keepdim=True)
    return first.long(), weights / torch.where(total == 0, 1.0, total)


def _dense(first: torch.Tensor, weights: torch.Tensor, shift: torch.Tensor, span: int):
    """N×S×span matrices: the taps placed at ``first + k + shift`` (``shift``: the box's start
    in a window of ``span`` pixels)."""
    where = (first + shift[:, None])[..., None] + torch.arange(weights.shape[-1])
    keep = weights != 0
    dense = torch.zeros(*first.shape, span, dtype=weights.dtype)
    return dense.scatter_add_(2, torch.where(keep, where, 0).clamp(max=span - 1), weights)


def _banded(first: torch.Tensor, weights: torch.Tensor, block: int):
    """Per image: blocks of ``block`` outputs, block ``g`` reading the window
    ``[base + g·step, base + g·step + width)`` of the box (windows may run past the box's
    ends, where the caller supplies pixels of weight 0). Returns weights
    N×G×W×block (W: the widest window of the batch), and base, step, width (N, long)."""
    n, size, taps = weights.shape
    groups = -(-size // block)
    pad = groups * block - size
    if pad:  # outputs past the image: weight 0, trimmed by the caller
        first = torch.cat([first, first[:, -1:].expand(n, pad)], 1)
        weights = torch.cat([weights, weights.new_zeros(n, pad, taps)], 1)
    lead = first.view(n, groups, block)[:, :, 0]  # each block's first tap (non-decreasing)
    grid = torch.arange(groups)
    # about one block's advance per block; every window starts at or before its first tap
    step = ((lead[:, -1] - lead[:, 0]) // max(groups - 1, 1)).clamp(min=1)
    base = (lead - grid * step[:, None]).min(dim=1).values
    start = base[:, None] + grid * step[:, None]  # N×G: each window's start
    weights = weights.view(n, groups, block, taps)
    offset = first.view(n, groups, block, 1) + torch.arange(taps) - start[..., None, None]
    keep = weights != 0
    width = torch.where(keep, offset + 1, 0).flatten(1).max(dim=1).values.clamp(min=1)
    widest = int(width.max())
    index = torch.where(keep, offset, 0).clamp(0, widest - 1)
    banded = torch.zeros(n, groups, block, widest, dtype=weights.dtype)
    banded.scatter_add_(3, index, weights)
    return banded.transpose(2, 3), base, step, width


def _buffer(
    source: torch.Tensor,
    base: int,
    step: int,
    width: int,
    groups: int,
    available: int,
    clamp: bool = False,
) -> tuple[torch.Tensor, int]:
    """A float copy of ``source`` (…×L, the box from its first pixel on; clamped to [0, 1] with
    ``clamp``) covering the windows of :func:`_banded`, zeros where ``source`` ends after
    ``available`` pixels or before the box; returns it and the offset of box pixel 0 in it."""
    before = max(0, -base)
    reach = base + (groups - 1) * step + width
    inside = max(0, min(reach, available))
    buffer = torch.empty(*source.shape[:-1], before + max(reach, 0))
    buffer[..., :before].zero_()
    if clamp:
        torch.clamp(source[..., :inside], 0.0, 1.0, out=buffer[..., before : before + inside])
    else:
        buffer[..., before : before + inside].copy_(source[..., :inside])
    buffer[..., before + inside :].zero_()
    return buffer, before


def _windows(buffer: torch.Tensor, start: int, step: int, width: int, groups: int):
    """``groups`` windows (views) of ``width`` along the last dim of ``buffer``, window ``g``
    at ``start + g·step``: groups×…×width."""
    return buffer[..., start:].unfold(-1, width, step)[..., :groups, :].movedim(-2, 0)


def _resize_one(
    canvas: torch.Tensor, where: tuple[int, int, int, int], across: tuple, down: tuple
) -> torch.Tensor:
    """Image ``where[0]``'s box (top, left, h) of a uint8 canvas to C×S'×S' (S' = G·B, to
    trim); ``across``/``down``: (weights G×width×B, base, step, width) of :func:`_banded`."""
    row, top, left, height = where
    channels, _, canvas_width = canvas.shape[1:]
    (wx, base_x, step_x, width_x), (wy, base_y, step_y, width_y) = across, down
    groups, groups_y = wx.shape[0], wy.shape[0]
    # the box's rows from its left edge on; pixels past its right edge (weight 0) are read
    # from the canvas where it has them
    source = canvas[row, :, top : top + height, left:]
    pixels, zero = _buffer(source, base_x, step_x, width_x, groups, canvas_width - left)
    rows = _windows(pixels.view(channels * height, -1), zero + base_x, step_x, width_x, groups)
    wide = torch.bmm(rows, wx[:, :width_x]).view(groups, channels, height, -1)
    source = wide.permute(1, 0, 3, 2)  # C×G×B×h, clamped as it is copied
    tall, zero = _buffer(source, base_y, step_y, width_y, groups_y, height, clamp=True)
    columns = _windows(tall.view(-1, tall.shape[-1]), zero + base_y, step_y, width_y, groups_y)
    out = torch.bmm(wy[:, :width_y].transpose(1, 2), columns.transpose(1, 2))  # G2×B×(C·G·B)
    return out.view(groups_y * wy.shape[2], channels, -1).permute(1, 0, 2)


def _crop_resize_banded(canvas, boxes, out_size, flip, index) -> torch.Tensor:
    top, left, h, w = boxes.unbind(1)
    block = min(BLOCK, out_size)
    fx, wx = resize_taps(w, out_size)
    fy, wy = resize_taps(h, out_size)
    bx, base_x, step_x, width_x = _banded(fx, wx / 255.0, block)
    by, base_y, step_y, width_y = _banded(fy, wy, block)
    mirror = flip.tolist() if flip is not None else [False] * len(boxes)
    out = torch.empty(len(boxes), canvas.shape[1], out_size, out_size)
    columns = (index, top, left, h, base_x, step_x, width_x, base_y, step_y, width_y)
    numbers = zip(*(t.tolist() for t in columns), strict=True)
    for i, (row, t, c, height, b_x, s_x, w_x, b_y, s_y, w_y) in enumerate(numbers):
        across, down = (bx[i], b_x, s_x, w_x), (by[i], b_y, s_y, w_y)
        image = _resize_one(canvas, (row, t, c, height), across, down)
        image = image[:, :out_size, :out_size]
        image = image.flip(-1) if mirror[i] else image  # a flip reverses the output columns
        torch.clamp(image, 0.0, 1.0, out=out[i])
    return out


def _crop_resize_dense(canvas, boxes, out_size, flip, index) -> torch.Tensor:
    top, left, h, w = boxes.unbind(1)
    height, width = canvas.shape[-2:]
    rows, cols = int(h.max()), int(w.max())
    row0, col0 = top.clamp(max=height - rows), left.clamp(max=width - cols)
    fx, wx = resize_taps(w, out_size)
    fy, wy = resize_taps(h, out_size)
    mx = _dense(fx, wx / 255.0, left - col0, cols)
    if flip is not None:
        mx = torch.where(flip[:, None, None], mx.flip(1), mx)
    my = _dense(fy, wy, top - row0, rows)
    device = canvas.device
    windows = torch.stack(
        [
            canvas[i, :, a : a + rows, b : b + cols]
            for i, a, b in zip(index.tolist(), row0.tolist(), col0.tolist(), strict=True)
        ]
    ).float()
    n, channels = windows.shape[:2]
    mx, my = mx.float().to(device), my.float().to(device)
    wide = torch.bmm(windows.view(n, channels * rows, cols), mx.transpose(1, 2)).clamp_(0.0, 1.0)
    return torch.matmul(my.unsqueeze(1), wide.view(n, channels, rows, out_size)).clamp_(0.0, 1.0)


def crop_resize(
    canvas: torch.Tensor,
    boxes: torch.Tensor,
    out_size: int,
    flip: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
    *,
    banded: bool | None = None,
) -> torch.Tensor:
    """Crop each box (top, left, h, w in canvas pixels, integers) of image ``index[i]`` of
    ``canvas`` (default: image ``i``) and resize it to ``out_size`` with antialiased bicubic
    interpolation, mirroring where ``flip`` is true.

    Each image is torchvision's ``resized_crop(img, top, left, h, w, size, BICUBIC,
    antialias=True)`` on its uint8 tensor (and PIL's resize, which the published code used),
    before their rounding: only the box is read, it is resized horizontally, clamped to [0, 1],
    and resized vertically. ``banded`` (default: on a CPU) picks the banded per-image products
    over the batched dense ones. The products run in fp32, autocast off (and assume TF32
    matmuls off, PyTorch's default). Returns floats in [0, 1] on the canvas's device.
    """
    boxes = boxes.cpu().round().long()  # pass CPU boxes and flips: no device synchronisation
    flip = flip.cpu().bool() if flip is not None else None
    index = torch.arange(len(boxes)) if index is None else index.cpu().long()
    if len(boxes) == 0:
        return torch.zeros(0, canvas.shape[1], out_size, out_size, device=canvas.device)
    if banded is None:
        banded = canvas.device.type == "cpu"
    resize = _crop_resize_banded if banded else _crop_resize_dense
    with torch.autocast(device_type=canvas.device.type, enabled=False):  # fp32 even in a caller's
        out = resize(canvas, boxes, out_size, flip, index)
    return out.to(canvas.device)
