"""The frozen backbone interface the methods rely on, and its on-disk text-feature cache."""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from reprogram.storage.cache import Cache, cache_key
from reprogram.storage.files import atomic_torch_save

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class BackboneSpec:
    """What the user asked for: enough to load the same backbone again."""

    arch: str
    weights: str | None = None
    quick_gelu: bool | None = None

    def to_dict(self) -> dict:
        return {"arch": self.arch, "weights": self.weights, "quick_gelu": self.quick_gelu}


def fingerprint_state_dict(state: dict[str, torch.Tensor]) -> str:
    """A short hash of every tensor's name, shape, dtype and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        original = state[name].detach()
        digest.update(f"{name}:{tuple(original.shape)}:{original.dtype}".encode())
        if original.numel():
            flat = original.cpu().contiguous().reshape(-1)
            digest.update(memoryview(flat.view(torch.uint8).numpy()))  # no copy of the bytes
    return digest.hexdigest()[:16]


def key_problems(
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[tuple[str, Sequence[int], Sequence[int]]],
) -> list[str]:
    """What is wrong between a weights file and a model, one phrase per kind (up to 3 keys each):
    ``mismatched`` holds ``(key, file shape, model shape)``."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        shapes = ", ".join(
            f"{key}: file {tuple(file_shape)} vs model {tuple(model_shape)}"
            for key, file_shape, model_shape in mismatched[:3]
        )
        parts.append(f"{len(mismatched)} keys of another shape ({shapes})")
    return parts


@dataclass
class TextFeatureCache:
    """Text features on disk keyed by backbone fingerprint and the exact list of texts."""

    folder: Path | None = None
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)

    def _path(self, fingerprint: str, texts: Sequence[str]) -> Path | None:
        """The entry's file, keyed by what produced it; None when there is no usable cache."""
        listing = json.dumps(list(texts))
        key = cache_key(TEXT_CACHE_VERSION, _library_versions(), fingerprint, listing)
        folder = self.folder or Cache.default().folder("text-features")
        return Path(folder) / fingerprint / f"{key}.pt" if folder else None

    def load(self, fingerprint: str, texts: Sequence[str]) -> torch.Tensor | None:
        path = self._path(fingerprint, texts)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            features = torch.load(path, map_location="cpu", weights_only=True)
            if not (isinstance(features, torch.Tensor) and features.ndim == 2):
                raise ValueError("not a feature matrix")
            if len(features) != len(texts):
                raise ValueError("another number of texts")
        except Exception:  # a damaged cache entry is recomputed, never fatal
            self.misses += 1
            return None
        self.hits += 1
        return features

    def save(self, fingerprint: str, texts: Sequence[str], features: torch.Tensor) -> None:
        path = self._path(fingerprint, texts)
        if path is None:
            return
        try:
            atomic_torch_save(features.detach().float().cpu().contiguous(), path)
        except OSError as err:  # a read-only or full cache only costs a recomputation next time
            warnings.warn(f"text-feature cache not written ({err})", stacklevel=2)


TEXT_CACHE_VERSION = 1  # bump when what a cached entry holds changes


@functools.lru_cache(maxsize=1)
def _library_versions() -> str:
    """Versions of what encodes text (tokenizers live in open_clip and transformers)."""
    from importlib import metadata

    found = []
    for name in ("open_clip_torch", "transformers"):
        try:
            found.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ",".join(found)


class Backbone(nn.Module):
    """A frozen CLIP: input size, normalisation, logit scale, image and text encoders.

    Subclasses implement ``_encode_image`` and ``_encode_text_batch``; this class freezes the
    weights, normalises features, batches and caches text encoding, and fingerprints the weights.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        *,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        text_cache: TextFeatureCache | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_size = int(input_size)
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)
        self.text_cache = text_cache if text_cache is not None else TextFeatureCache()
        self._fingerprint: str | None = None

    # -- to implement -------------------------------------------------------------------------
    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def _logit_scale(self) -> torch.Tensor:
        raise NotImplementedError

    def _text_identity(self) -> str:
        """What, besides the weights, changes text features (activation, tokenizer, context)."""
        return ""

    def image_blocks(self) -> list[nn.Module]:
        """The image encoder's repeated blocks, for block-wise ``torch.compile`` ([]: unknown)."""
        return []

    # -- public interface ---------------------------------------------------------------------
    def freeze(self) -> Backbone:
        for param in self.parameters():
            param.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> Backbone:
        """The backbone stays in eval mode whatever the caller asks (it is never trained)."""
        return super().train(False)

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)`` of the weights as stored, in fp32 (no cap: the published code
        multiplies by it as is; the ``logit_scale_cap`` method option caps it)."""
        return float(self._logit_scale().detach().float().exp())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights (names, shapes, dtypes, bytes); equal for the same weights
        whatever file format they were read from."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_state_dict(self.state_dict())
        return self._fingerprint

    @property
    def text_cache_key(self) -> str:
        """The key text features are cached under: the weights' fingerprint plus whatever else
        changes text features for the same weights (e.g. QuickGELU vs GELU)."""
        identity = self._text_identity()
        if not identity:
            return self.fingerprint
        return f"{self.fingerprint}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of already-normalised pixels (B×3×S×S).

        Gradients flow to ``pixels`` (the weights are frozen).
        """
        features = self._encode_image(pixels)
        return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def encode_text(
        self, texts: Sequence[str], batch_size: int = 256, progress=None
    ) -> torch.Tensor:
        """L2-normalised fp32 text features (N×d) on the backbone's device, cached on disk;
        ``progress(n)`` after each batch of ``n`` texts encoded."""
        texts = list(texts)
        key = self.text_cache_key
        cached = self.text_cache.load(key, texts) if texts else None
        if cached is None:
            chunks = []
            for i in range(0, len(texts), batch_size):
                chunks.append(self._encode_text_batch(texts[i : i + batch_size]).float())
                if progress is not None:
                    progress(len(chunks[-1]))
            cached = torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim)
            cached = cached / cached.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            if texts:
                self.text_cache.save(key, texts, cached)
        return cached.to(self.device)

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-able summary saved with every run."""
        return {
            **self.spec.to_dict(),
            "fingerprint": self.fingerprint,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "logit_scale": self.logit_scale,
        }
