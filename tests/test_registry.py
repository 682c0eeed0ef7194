"""The method registry and the parts: what each part answers, registration rules, a new part."""

from __future__ import annotations

import pytest
import torch
from helpers import cli

from reprogram.backbones import load_backbone
from reprogram.errors import ReprogramError
from reprogram.model import attribution as attr
from reprogram.model import parts
from reprogram.model.aggregation import Aggregator
from reprogram.model.methods import build_reprogrammer
from reprogram.model.recipes import (
    BUILTIN,
    Recipe,
    get_recipe,
    list_methods,
    register_method,
    unregister_method,
)

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels

BUILT_IN = ["zero-shot", "zero-shot-desc", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls"]
CLASSES = ["red disc", "green square", "blue stripes"]


def _descriptions(*names: str) -> list[tuple[str, dict[str, list[str]]]]:
    return [
        (
            f"{name}.json",
            {c: [f"{name} sentence {j} about the {c}" for j in range(6)] for c in CLASSES},
        )
        for name in names
    ]


def test_the_built_in_methods_are_listed_in_order():
    assert list_methods()[: len(BUILT_IN)] == BUILT_IN
    assert [r.name for r in BUILTIN] == BUILT_IN


def test_parts_answer_what_the_engine_asks():
    trains = {name: get_recipe(name).trainable for name in BUILT_IN}
    assert [n for n, t in trains.items() if not t] == ["zero-shot", "zero-shot-desc"]
    estimates = [n for n in BUILT_IN if get_recipe(n).aggregation.estimates]
    assert estimates == ["dvp-cse", "dvp-cls"]
    assert [n for n in BUILT_IN if not get_recipe(n).needs_descriptions] == [
        "zero-shot",
        "vp",
        "ar",
    ]
    assert parts.CAUSES.file_stems([1, 4]) == [("cse_1", "csl_1"), ("cse_4", "csl_4")]
    assert parts.ATTRIBUTE_PAIR.file_stems([1]) == [("des",), ("dist",)]
    assert parts.TEMPLATE_TEXTS.file_stems([1]) == []
    assert get_recipe("dvp-cls").grouping.on_new_classes == "nearest trained centroid"
    assert get_recipe("dvp-cse").grouping.on_new_classes is None


def test_defaults_list_only_the_options_a_method_reads():
    zero_shot = {"template": "This is a photo of {}.", "logit_scale_cap": None}  # every method
    assert get_recipe("zero-shot").defaults() == zero_shot  # reads the scores' scale
    attrvr, cse = get_recipe("attrvr").defaults(), get_recipe("dvp-cse").defaults()
    assert attrvr["alpha"] == 0.5 and attrvr["attr_top_k"] == 3 and "prm_top_k" not in attrvr
    assert cse["prm_top_k"] == 3 and cse["m"] == 20 and "alpha" not in cse
    assert "clusters" in get_recipe("dvp-cls").defaults() and "clusters" not in cse


def test_the_scores_scale_is_the_models_own_unless_capped():
    """As published, s = exp(logit_scale) as stored (OpenAI's fp16 value: 100.03), not capped at
    100; ``logit_scale_cap`` caps it."""
    from reprogram.engine.config import load_config
    from reprogram.model.options import MethodOptions

    backbone = load_backbone("random:tiny")
    stored = torch.tensor(4.60546875)  # ln(100) in fp16, as OpenAI's checkpoints hold it
    with torch.no_grad():
        backbone.model.logit_scale.fill_(stored)
    own = float(stored.exp())
    assert 100.02 < own < 100.04 and backbone.logit_scale == own
    model = build_reprogrammer("ar", backbone, CLASSES)
    capped = build_reprogrammer("ar", backbone, CLASSES, options=MethodOptions(logit_scale_cap=100))
    assert (model.logit_scale, capped.logit_scale) == (own, 100.0)
    images = torch.rand(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        scores, capped_scores = model(images).scores, capped(images).scores
    torch.testing.assert_close(scores, capped_scores * (own / 100.0))
    assert load_config(None, {"dataset": "toy"}).method.logit_scale_cap is None
    assert load_config(None, {"dataset": "toy", "logit_scale_cap": "100"}).method.options() == (
        MethodOptions(logit_scale_cap=100.0)
    )
    with pytest.raises(ReprogramError, match="logit_scale_cap must be a finite number > 0"):
        load_config(None, {"dataset": "toy", "logit_scale_cap": "0"}).validate()


def test_a_part_compared_with_a_string_raises():
    with pytest.raises(TypeError, match="compared with the string 'prm'"):
        _ = get_recipe("dvp-cse").aggregation == "prm"
    assert get_recipe("dvp-cse").aggregation == parts.PRM_AGGREGATION


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ReprogramError, match=r"unknown method 'nope' \(known: zero-shot, "):
        get_recipe("nope")


def test_registration_rules():
    recipe = Recipe("test-ar", parts.PADDING, parts.TEMPLATE_TEXTS, parts.SINGLE, parts.MEAN, "x")
    try:
        register_method(recipe)
        register_method(recipe)  # the same recipe again changes nothing
        other = Recipe(
            "test-ar", parts.WATERMARK, parts.TEMPLATE_TEXTS, parts.SINGLE, parts.MEAN, ""
        )
        with pytest.raises(ReprogramError, match="already registered"):
            register_method(other)
        register_method(other, replace=True)
        assert get_recipe("test-ar") is other
    finally:
        unregister_method("test-ar")
    assert "test-ar" not in list_methods()
    with pytest.raises(ReprogramError, match="must be one word"):
        register_method(Recipe("a b", parts.PADDING, parts.CAUSES, parts.SINGLE, parts.MEAN, ""))


def test_recipes_refuse_strings_and_impossible_combinations():
    with pytest.raises(ReprogramError, match="aggregation must be a part of kind Aggregation"):
        Recipe("x", parts.PADDING, parts.CAUSES, parts.BY_FILE, "prm", "")  # type: ignore[arg-type]
    with pytest.raises(ReprogramError, match="needs several prompts"):
        Recipe("x", parts.NO_PROMPT, parts.CAUSES, parts.BY_FILE, parts.MEAN, "")
    with pytest.raises(ReprogramError, match="needs description texts"):
        Recipe("x", parts.PADDING, parts.TEMPLATE_TEXTS, parts.KMEANS, parts.MEAN, "")


def test_text_sources_check_the_number_of_files():
    backbone = load_backbone("random:tiny")
    with pytest.raises(ReprogramError, match="needs a descriptive and a distinctive file, got 1"):
        build_reprogrammer("attrvr", backbone, CLASSES, _descriptions("des"))
    with pytest.raises(ReprogramError, match="'dvp-cse' needs description files"):
        build_reprogrammer("dvp-cse", backbone, CLASSES, [])
    model = build_reprogrammer("dvp-cse", backbone, CLASSES, _descriptions("a", "b"))
    assert model.prompts.count == 2 and model.bank.group_names == ["a", "b"]


class Max(Aggregator):
    """A new aggregation: a class's best description score."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.amax(dim=-1)


def test_a_new_aggregation_part_builds_and_attributes():
    best = parts.Aggregation(
        "max", "best description", lambda bank, options: Max(), "its highest description score"
    )
    register_method(Recipe("test-max", parts.PADDING, parts.CAUSES, parts.BY_FILE, best, "max"))
    try:
        backbone = load_backbone("random:tiny")
        model = build_reprogrammer("test-max", backbone, CLASSES, _descriptions("a", "b", "c"))
        images = torch.rand(2, 3, model.image_size, model.image_size)
        with torch.no_grad():
            output = model(images)
        assert torch.equal(output.logits, output.scores.amax(-1))
        # the gradient weights: one 1 per class (its best text), and they sum to the logit
        weights = attr.description_weights(model, output.scores)
        assert torch.equal(weights.sum(-1), torch.ones(2, 3))
        contributions = attr.description_contributions(model, output.scores)
        assert torch.allclose(contributions.sum(-1), output.logits)
    finally:
        unregister_method("test-max")


def test_methods_command_lists_every_method(capsys):
    assert cli("methods") == 0
    printed = capsys.readouterr().out
    for name in BUILT_IN:
        assert any(line.startswith(name + " ") for line in printed.splitlines()), name
    assert "padding · causes · by-file · prm" in printed
