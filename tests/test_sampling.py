"""Description sampling and DVP-cls clustering: the published defaults and their options."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from reprogram.errors import ReprogramError
from reprogram.model.methods import MethodOptions, build_text_bank, get_recipe
from reprogram.text.descriptions import (
    cluster_features,
    cluster_groups,
    read_description_file,
    sample_descriptions,
)

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels

CLASSES = [f"class_{i}" for i in range(12)]


def sentence_file(count: int = 20) -> dict[str, list[str]]:
    return {c: [f"{c} is described by sentence number {j}" for j in range(count)] for c in CLASSES}


# -- DVP-cls k-means ------------------------------------------------------------------------------
def features(seed: int = 0, classes: int = 10, per_class: int = 20, dim: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(classes, per_class, dim, generator=generator)


def test_default_kmeans_is_the_published_call():
    from sklearn.cluster import KMeans

    feats = features()
    expected = KMeans(n_clusters=3, random_state=0).fit(cluster_features(feats)).labels_
    labels = cluster_groups(feats, 3)
    assert labels.shape == (10, 20)
    assert np.array_equal(labels.reshape(-1).numpy(), expected)


def test_kmeans_n_init_is_passed_through():
    from sklearn.cluster import KMeans

    feats = features(1)
    expected = KMeans(n_clusters=3, random_state=0, n_init=10).fit(cluster_features(feats)).labels_
    assert np.array_equal(cluster_groups(feats, 3, n_init=10).reshape(-1).numpy(), expected)
    with pytest.raises(ReprogramError, match="kmeans_n_init"):
        cluster_groups(feats, 3, n_init=0)


def test_kmeans_n_init_reaches_the_model_options():
    from reprogram.engine.config import load_config

    config = load_config(None, {"dataset": "toy", "kmeans_n_init": "10"})
    assert config.method.options().kmeans_n_init == 10
    assert load_config(None, {"dataset": "toy"}).method.options().kmeans_n_init is None


# -- sampling m per class -------------------------------------------------------------------------
def test_published_sampling_repeats_at_exactly_m():
    sampled = sample_descriptions(sentence_file(20), CLASSES, 20, seed=1)
    distinct = [len(set(row)) for row in sampled]
    assert all(len(row) == 20 for row in sampled)
    assert max(distinct) < 20  # with replacement: some sentences twice, some never


def test_distinct_sampling_uses_every_sentence():
    data = sentence_file(20)
    sampled = sample_descriptions(data, CLASSES, 20, seed=1, mode="distinct")
    for name, row in zip(CLASSES, sampled, strict=True):
        assert sorted(row) == sorted(data[name])
    # fewer than m: whole passes, counts differ by at most one
    short = sample_descriptions(sentence_file(6), CLASSES, 20, seed=1, mode="distinct")
    for row in short:
        counts = Counter(row)
        assert len(counts) == 6 and max(counts.values()) - min(counts.values()) <= 1
    # more than m: both modes draw without replacement
    long = sample_descriptions(sentence_file(25), CLASSES, 20, seed=1, mode="distinct")
    assert all(len(set(row)) == 20 for row in long)


def test_unknown_sampling_mode_is_refused():
    with pytest.raises(ReprogramError, match="description_sampling"):
        sample_descriptions(sentence_file(), CLASSES, 5, seed=1, mode="sometimes")


def test_text_bank_records_the_sampling():
    recipe = get_recipe("dvp-cls")
    data = [("des.json", sentence_file())]
    for mode in ("published", "distinct"):
        bank = build_text_bank(
            recipe, CLASSES, data, MethodOptions(m=20, description_sampling=mode), 1
        )
        assert bank.sampling == mode
        assert type(bank).from_dict(bank.to_dict()).sampling == mode


# -- seeded by content, not by path ---------------------------------------------------------------
def test_same_file_at_two_paths_gives_the_same_texts(tmp_path):
    first = tmp_path / "a" / "des.json"
    first.parent.mkdir()
    first.write_text(json.dumps(sentence_file(20)))
    second = tmp_path / "elsewhere" / "renamed.json"
    second.parent.mkdir()
    shutil.copy(first, second)
    texts = [
        sample_descriptions(read_description_file(p), CLASSES, 20, seed=3, source=str(p))
        for p in (first, second)
    ]
    assert texts[0] == texts[1]
    other_seed = sample_descriptions(read_description_file(first), CLASSES, 20, seed=4)
    assert other_seed != texts[0]


def test_sampling_depends_on_content_and_is_per_class():
    data = sentence_file(25)
    base = sample_descriptions(data, CLASSES, 10, seed=1)
    # a class's draw does not depend on which other classes are asked for, nor their order
    reordered = sample_descriptions(data, CLASSES[::-1], 10, seed=1)
    assert reordered[::-1] == base
    assert sample_descriptions(data, CLASSES[3:4], 10, seed=1) == [base[3]]
    # other content, other draw
    edited = {**data, CLASSES[0]: data[CLASSES[0]] + ["one more sentence that is long enough"]}
    changed = sample_descriptions(edited, CLASSES, 10, seed=1)
    assert changed != base


# -- which sentences count: the 20-character filter ---------------------------------------------
EDGE = " of the other scene."  # packaged sun397_dist: 20 characters as written, 19 stripped


def test_the_length_filter_counts_sentences_as_written_by_default():
    """The published code keeps a sentence when ``len(sentence) >= 20``; stripping first
    (reprogram before) is the ``description_length: stripped`` option."""
    from reprogram.engine.config import load_config
    from reprogram.text.descriptions import valid_sentences

    assert (len(EDGE), len(EDGE.strip())) == (20, 19)
    sentences = ["x" * 19, EDGE, "  " + "y" * 18 + "  ", "z" * 20]
    assert valid_sentences(sentences) == ["of the other scene.", "y" * 18, "z" * 20]
    assert valid_sentences(sentences, "stripped") == ["z" * 20]
    data = {name: [EDGE] for name in CLASSES}
    options = MethodOptions(m=3)
    assert options.description_length == "raw"
    bank = build_text_bank(get_recipe("dvp-cls"), CLASSES, [("des.json", data)], options, 1)
    assert bank.texts[0] == ["of the other scene."] * 3
    stripped = MethodOptions(m=3, description_length="stripped")
    with pytest.raises(ReprogramError, match="class_0.*20 characters once stripped"):
        build_text_bank(get_recipe("dvp-cls"), CLASSES, [("des.json", data)], stripped, 1)
    config = load_config(None, {"dataset": "toy", "description_length": "stripped"})
    assert config.method.options().description_length == "stripped"
    with pytest.raises(ReprogramError, match="description_length must be one of raw, stripped"):
        load_config(None, {"dataset": "toy", "description_length": "trimmed"}).validate()


# -- the run says which sampling it used -----------------------------------------------------------
def test_results_record_the_sampling_used(tmp_path):
    from helpers import make_folder_dataset, quick_config

    from reprogram.engine.train import fit

    data = make_folder_dataset(tmp_path / "data")
    for method, sampling, expected in (
        ("dvp-cls", "published", "published"),
        ("dvp-cls", "distinct", "distinct"),
        ("zero-shot", "published", None),  # template texts are not sampled
    ):
        config = quick_config(
            data, method, epochs=1, prm_warmup_epochs=0, description_sampling=sampling
        )
        results = fit(config, tmp_path / f"{method}-{sampling}")
        assert results["description_sampling"] == expected
