"""Class descriptions: read, check, sample m per class, and group them for the methods."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reprogram.errors import ReprogramError
from reprogram.io import read_json

MIN_DESCRIPTION_CHARS = 20  # the paper keeps sentences of at least this many characters


def read_description_file(path: str | Path) -> dict[str, list[str]]:
    """Read a ``{class: [sentence, ...]}`` JSON file, checking its shape."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ReprogramError(
            f"{path}: expected a JSON object mapping class names to lists of sentences"
        )
    for name, sentences in data.items():
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise ReprogramError(f"{path}: class '{name}' must map to a list of strings")
    return data


def valid_sentences(sentences: Sequence[str]) -> list[str]:
    """The sentences the paper keeps: stripped, at least ``MIN_DESCRIPTION_CHARS`` long."""
    return [s.strip() for s in sentences if len(s.strip()) >= MIN_DESCRIPTION_CHARS]


TEMPLATE = "This is a photo of {}."


def readable(classname: str) -> str:
    """Class names as they appear in prompts: underscores become spaces."""
    return classname.replace("_", " ")


def template_texts(classnames: Sequence[str], template: str = TEMPLATE) -> list[list[str]]:
    """One text per class from a template (zero-shot, VP, AR)."""
    return [[template.format(readable(name))] for name in classnames]


def sample_descriptions(
    descriptions: dict[str, list[str]],
    classnames: Sequence[str],
    m: int,
    seed: int,
    source: str = "descriptions",
) -> list[list[str]]:
    """The paper's per-class sampling: keep sentences of >= 20 characters; if more than ``m``
    remain sample ``m`` without replacement, otherwise ``m`` with replacement (seeded)."""
    missing = [name for name in classnames if name not in descriptions]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ReprogramError(f"{source}: no descriptions for {len(missing)} classes: {shown}{more}")
    rng = random.Random(f"descriptions:{seed}:{source}")
    sampled = []
    for name in classnames:
        kept = valid_sentences(descriptions[name])
        if not kept:
            raise ReprogramError(
                f"{source}: class '{name}' has no sentence of at least "
                f"{MIN_DESCRIPTION_CHARS} characters"
            )
        sampled.append(rng.sample(kept, m) if len(kept) > m else rng.choices(kept, k=m))
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
        }

    @classmethod
    def from_dict(cls, data: dict) -> TextBank:
        return cls(
            texts=data["texts"],
            groups=torch.tensor(data["groups"], dtype=torch.long),
            sets=torch.tensor(data["sets"], dtype=torch.long),
            group_names=list(data["group_names"]),
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


def cluster_groups(features: torch.Tensor, clusters: int, random_state: int = 0) -> torch.Tensor:
    """DVP-cls: k-means over all C·M L2-normalised text features; returns C×M cluster indices."""
    from sklearn.cluster import KMeans

    num_classes, per_class, dim = features.shape
    flat = torch.nn.functional.normalize(features.reshape(-1, dim).float(), dim=-1).cpu().numpy()
    if clusters <= 1:
        return torch.zeros(num_classes, per_class, dtype=torch.long)
    kmeans = KMeans(n_clusters=clusters, random_state=random_state, n_init=10)
    labels = kmeans.fit_predict(flat.astype("float64"))
    return torch.from_numpy(labels).long().view(num_classes, per_class)
