"""Visual prompts: a bank of v input-space patterns applied to a batch in one call.

* ``padding`` (AR, AttrVR, DVP): the image (already resized to the inner size) is zero-padded to
  the model's input size, ``sigmoid(theta)`` is added on the frame only, then CLIP normalisation.
* ``watermark`` (VP): the full-size image is CLIP-normalised first, then an unconstrained
  ``theta`` is added on a frame of fixed width.
* ``zero-padding`` (RVP's "without the prompt" ablation): the padding layout with a zero
  frame and nothing trained;
* ``none`` (zero-shot): normalisation only.

The bank holds one parameter tensor of shape v×3×S×S; ``forward`` returns v×B×3×S×S.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprogram.errors import ReprogramError

PROMPT_KINDS = ("padding", "watermark", "none", "zero-padding")
FIXED_KINDS = ("none", "zero-padding")  # nothing to train
PAPER_INPUT = 224
PAPER_PAD = 16  # padding prompt: 224 input, 192 inner image
PAPER_WATERMARK = 30  # VP frame width at 224


def default_pad(input_size: int) -> int:
    """Frame width of the padding prompt, scaled from the paper's 16 px at 224."""
    return max(1, round(input_size * PAPER_PAD / PAPER_INPUT))


def default_watermark(input_size: int) -> int:
    return max(1, round(input_size * PAPER_WATERMARK / PAPER_INPUT))


def frame_mask(input_size: int, width: int) -> torch.Tensor:
    """1 on a frame of ``width`` pixels around the border, 0 inside (shape S×S)."""
    mask = torch.ones(input_size, input_size)
    if input_size - 2 * width > 0:
        mask[width : input_size - width, width : input_size - width] = 0
    return mask


class PromptBank(nn.Module):
    """v visual prompts of one kind for a backbone of a given input size."""

    def __init__(
        self,
        kind: str,
        count: int,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        frame: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt kind '{kind}' (expected {', '.join(PROMPT_KINDS)})")
        if kind in FIXED_KINDS and count != 1:
            raise ValueError(f"a '{kind}' prompt bank holds exactly one (fixed) prompt")
        self.kind = kind
        self.count = count
        self.input_size = input_size
        if kind in ("padding", "zero-padding"):
            self.frame = frame if frame is not None else default_pad(input_size)
        elif kind == "watermark":
            self.frame = frame if frame is not None else default_watermark(input_size)
        else:
            self.frame = 0
        if kind != "none" and not 1 <= self.frame < (input_size + 1) // 2:
            raise ReprogramError(
                f"frame {self.frame} does not fit the backbone's {input_size}-px input: "
                f"set frame between 1 and {(input_size - 1) // 2} (or omit it for the default)"
            )
        shape = (count, 3, input_size, input_size) if kind not in FIXED_KINDS else (0,)
        self.theta = nn.Parameter(torch.zeros(shape), requires_grad=kind not in FIXED_KINDS)
        self.register_buffer(
            "mask", frame_mask(input_size, self.frame) if kind != "none" else torch.zeros(0)
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def image_size(self) -> int:
        """The size images must have when they enter the bank (inner size for padding)."""
        padded = self.kind in ("padding", "zero-padding")
        return self.input_size - 2 * self.frame if padded else self.input_size

    @property
    def trainable_parameters(self) -> int:
        """Parameters that affect the output (those under the frame mask)."""
        trains = self.kind not in FIXED_KINDS
        return int(self.mask.sum().item()) * 3 * self.count if trains else 0

    def patterns(self) -> torch.Tensor:
        """What each prompt adds, v×3×S×S (sigmoid for padding, raw for watermark)."""
        if self.kind == "padding":
            return torch.sigmoid(self.theta) * self.mask
        if self.kind == "watermark":
            return self.theta * self.mask
        return torch.zeros(1, 3, self.input_size, self.input_size, device=self.mean.device)

    def _normalised_patterns(self) -> torch.Tensor:
        """``(patterns - mean) / std`` (v×3×S×S), computed on every call: no cache, as nothing
        tells every write to ``theta`` (an edit through ``theta.data`` keeps its version), and
        it costs under 1 ms (v = 3, 224 px, one CPU thread), against 5-265 ms to prompt a
        batch of 8-64 images and seconds to encode them."""
        return (self.patterns() - self.mean).div_(self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images B×3×s×s in [0, 1] (s = ``image_size``) -> prompted, normalised v×B×3×S×S.

        The same numbers (and gradients, in the same order of operations) as padding with
        zeros, adding the pattern and normalising, with one full-size v×B tensor instead of
        three: on the frame the padded image is 0, so the output there is the normalised
        pattern; inside, the pattern is 0, so it is the normalised image."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"prompt bank expects {self.image_size}-px images, got {tuple(images.shape[-2:])}"
            )
        normalised = (images - self.mean).div_(self.std)
        if self.kind in ("padding", "zero-padding"):
            f, size, shape = self.frame, self.input_size, (self.count, images.shape[0], -1, -1, -1)
            if torch.is_grad_enabled() and self.theta.requires_grad:
                # normalise the expanded pattern: its gradient is divided by std before the sum
                # over the batch, as when the padded images are normalised
                frames = self.patterns().to(normalised.dtype).unsqueeze(1).expand(shape)
                out = (frames - self.mean).div_(self.std)
            else:
                frames = self._normalised_patterns().to(normalised.dtype).unsqueeze(1)
                out = frames.expand(shape).clone()
            out[:, :, :, f : size - f, f : size - f] = normalised.unsqueeze(0)
            return out
        normalised = normalised.unsqueeze(0)
        if self.kind == "watermark":
            return normalised + self.patterns().unsqueeze(1).to(normalised.dtype)
        return normalised
