"""Class descriptions: read, check, sample m per class, and group them for the methods."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reprogram.errors import ReprogramError
from reprogram.storage.files import read_json

MIN_DESCRIPTION_CHARS = 20  # the paper keeps sentences of at least this many characters
# How a sentence's length is counted for that filter: on the sentence as written ("raw", the
# published code's len(sentence)), or once surrounding whitespace is stripped ("stripped").
LENGTH_MODES = ("raw", "stripped")


def read_description_file(path: str | Path) -> dict[str, list[str]]:
    """Read a ``{class: [sentences]}`` JSON file (or a ``packaged:NAME``), checking its shape."""
    if str(path).startswith("packaged:"):
        from reprogram.text.packaged import materialize

        path = materialize(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ReprogramError(
            f"{path}: expected a JSON object mapping class names to lists of sentences"
        )
    for name, sentences in data.items():
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise ReprogramError(f"{path}: class '{name}' must map to a list of strings")
    return data


def valid_sentences(sentences: Sequence[str], length: str = "raw") -> list[str]:
    """The sentences the paper keeps, stripped: those of at least ``MIN_DESCRIPTION_CHARS``
    characters, counted as written (``length="raw"``, the published ``len(sentence)``) or once
    stripped (``"stripped"``). The text encoders' tokenizers ignore surrounding whitespace, so
    stripping what is kept changes no feature."""
    if length not in LENGTH_MODES:
        raise ReprogramError(
            f"config key 'description_length': expected one of {', '.join(LENGTH_MODES)}, "
            f"got '{length}'"
        )
    if length == "stripped":
        return [s.strip() for s in sentences if len(s.strip()) >= MIN_DESCRIPTION_CHARS]
    return [s.strip() for s in sentences if len(s) >= MIN_DESCRIPTION_CHARS]


TEMPLATE = "This is a photo of {}."


def readable(classname: str) -> str:
    """Class names as they appear in prompts: underscores become spaces."""
    return classname.replace("_", " ")


def template_texts(classnames: Sequence[str], template: str = TEMPLATE) -> list[list[str]]:
    """One text per class from a template (zero-shot, VP, AR)."""
    return [[template.format(readable(name))] for name in classnames]


SAMPLING_MODES = ("published", "distinct")


def content_digest(descriptions: dict[str, list[str]]) -> str:
    """A hash of a description file's content (classes and sentences), independent of its path."""
    canonical = json.dumps(descriptions, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sample_sentences(kept: Sequence[str], m: int, rng: random.Random, mode: str) -> list[str]:
    """``m`` of a class's valid sentences.

    ``published``: the authors' code — without replacement if more than ``m``, otherwise with
    replacement (so a class with exactly ``m`` uses about 13 distinct of 20).
    ``distinct``: without replacement whenever possible — exactly ``m`` uses each once; fewer than
    ``m`` repeats whole shuffled passes so that counts differ by at most one.
    """
    if mode == "published":
        return rng.sample(kept, m) if len(kept) > m else rng.choices(kept, k=m)
    picked: list[str] = []
    while len(picked) < m:
        picked += rng.sample(kept, min(len(kept), m - len(picked)))
    return picked


def sample_descriptions(
    descriptions: dict[str, list[str]],
    classnames: Sequence[str],
    m: int,
    seed: int,
    source: str = "descriptions",
    mode: str = "published",
    length: str = "raw",
) -> list[list[str]]:
    """The paper's per-class sampling: keep sentences of >= 20 characters (counted as
    :func:`valid_sentences`' ``length`` says), then draw ``m`` per class (see
    :func:`sample_sentences`). Each class's draw is seeded by ``seed``, the class name
    and the file's content, so the same file at any path gives the same texts."""
    if mode not in SAMPLING_MODES:
        raise ReprogramError(
            f"config key 'description_sampling': expected one of {', '.join(SAMPLING_MODES)}, "
            f"got '{mode}'"
        )
    missing = [name for name in classnames if name not in descriptions]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ReprogramError(f"{source}: no descriptions for {len(missing)} classes: {shown}{more}")
    digest = content_digest(descriptions)
    sampled = []
    for name in classnames:
        kept = valid_sentences(descriptions[name], length)
        if not kept:
            raise ReprogramError(
                f"{source}: class '{name}' has no sentence of at least "
                f"{MIN_DESCRIPTION_CHARS} characters"
                + (" once stripped" if length == "stripped" else "")
            )
        rng = random.Random(f"descriptions:{seed}:{digest}:{name}")
        sampled.append(sample_sentences(kept, m, rng, mode))
    return sampled


@dataclass
class TextBank:
    """Per class, M texts (class-major), the prompt that scores each, and its text set.

    ``groups[c, j]`` is the index of the prompt that scores text j of class c; ``sets[c, j]``
    tells AttrVR's descriptive (0) from distinctive (1) attributes (0 everywhere else).
    """

    texts: list[list[str]]
    groups: torch.Tensor
    sets: torch.Tensor
    group_names: list[str]
    sampling: str | None = None  # how descriptions were drawn (SAMPLING_MODES); None: templates
    template: bool = False  # descriptions made by `reprogram describe`'s template fallback

    @property
    def num_classes(self) -> int:
        return len(self.texts)

    @property
    def per_class(self) -> int:
        return len(self.texts[0]) if self.texts else 0

    def flat(self) -> list[str]:
        return [text for row in self.texts for text in row]

    def to_dict(self) -> dict:
        return {
            "texts": self.texts,
            "groups": self.groups.tolist(),
            "sets": self.sets.tolist(),
            "group_names": self.group_names,
            "sampling": self.sampling,
            "template": self.template,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TextBank:
        return cls(
            texts=data["texts"],
            groups=torch.tensor(data["groups"], dtype=torch.long),
            sets=torch.tensor(data["sets"], dtype=torch.long),
            group_names=list(data["group_names"]),
            sampling=data.get("sampling"),
            template=bool(data.get("template", False)),
        )


def _rectangular(rows: list[list[str]], source: str) -> None:
    if len({len(r) for r in rows}) > 1:
        raise ReprogramError(f"{source}: every class needs the same number of texts")


def single_group_bank(texts: list[list[str]], name: str = "all") -> TextBank:
    """All texts scored by one prompt (zero-shot, VP, AR, description ensembles)."""
    _rectangular(texts, name)
    shape = (len(texts), len(texts[0]))
    zeros = torch.zeros(shape, dtype=torch.long)
    return TextBank(texts, zeros, zeros.clone(), [name])


def concatenated_bank(
    groups: list[list[list[str]]], names: list[str], as_sets: bool = False
) -> TextBank:
    """Concatenate per-group texts per class: group i owns a block of columns.

    With ``as_sets`` the blocks are text *sets* scored by one prompt (AttrVR); otherwise each block
    is scored by its own prompt (DVP-cse: one prompt per cause).
    """
    texts = [sum((group[c] for group in groups), []) for c in range(len(groups[0]))]
    block = torch.cat([torch.full((len(g[0]),), i, dtype=torch.long) for i, g in enumerate(groups)])
    block = block.unsqueeze(0).expand(len(texts), -1).clone()
    zeros = torch.zeros_like(block)
    if as_sets:
        return TextBank(texts, zeros, block, ["all"])
    return TextBank(texts, block, zeros, names)


def cluster_features(features: torch.Tensor) -> np.ndarray:
    """The C·M×d L2-normalised text features DVP-cls clusters (float64 NumPy)."""
    dim = features.shape[-1]
    flat = torch.nn.functional.normalize(features.reshape(-1, dim).float(), dim=-1)
    return flat.cpu().numpy().astype("float64")


def cluster_groups(
    features: torch.Tensor, clusters: int, random_state: int = 0, n_init: int | None = None
) -> torch.Tensor:
    """DVP-cls: k-means over all C·M L2-normalised text features; returns C×M cluster indices.

    The default is the published call ``KMeans(n_clusters=v, random_state=0)`` with the installed
    scikit-learn's default ``n_init``; pass ``n_init`` to restart k-means that many times.
    """
    from sklearn.cluster import KMeans

    num_classes, per_class, _ = features.shape
    if clusters <= 1:
        return torch.zeros(num_classes, per_class, dtype=torch.long)
    if n_init is not None and n_init < 1:
        raise ReprogramError(f"config key 'kmeans_n_init' must be at least 1, got {n_init}")
    extra = {} if n_init is None else {"n_init": n_init}
    kmeans = KMeans(n_clusters=clusters, random_state=random_state, **extra)
    labels = kmeans.fit_predict(cluster_features(features))
    return torch.from_numpy(labels).long().view(num_classes, per_class)
