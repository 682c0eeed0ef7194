"""The method hyper-parameters and their defaults (the paper's), written once."""

from __future__ import annotations

from dataclasses import dataclass

from reprogram.text.descriptions import TEMPLATE


@dataclass
class MethodOptions:
    """Method hyper-parameters (the paper's defaults)."""

    m: int = 20  # descriptions sampled per class and file
    prm_top_k: int = 3
    attr_top_k: int = 3
    alpha: float = 0.5
    clusters: int | None = None  # DVP-cls v; None: the dataset's published value, else 3
    kmeans_seed: int = 0
    kmeans_n_init: int | None = None  # None: scikit-learn's default (the published call)
    description_sampling: str = "published"  # or "distinct" (see descriptions.sample_sentences)
    description_length: str = "raw"  # the 20-char filter counts raw (published) or "stripped"
    template: str = TEMPLATE
    # the scores' scale s: None = the model's own exp(logit_scale) (published; OpenAI's
    # fp16-stored value gives 100.03); a number caps s at it (earlier reprogram: 100.0)
    logit_scale_cap: float | None = None
    frame: int | None = None  # frame width in px; None: scaled from the paper's 16 (30 for VP)
    probe_init: str = "zero"  # linear probe's D×C weight: "zero" or "text" (the texts' head)
