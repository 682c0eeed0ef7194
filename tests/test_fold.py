"""The head folded into one D×C matrix per prompt: linear maps of the aggregations, and folded
logits equal to the training-time logits for every built-in method whose aggregation folds."""

from __future__ import annotations

import pytest
import torch

from reprogram.backbones import load_backbone
from reprogram.model.aggregation import Mean, MeanTopK, ReweightingMatrix
from reprogram.model.fold import NotFoldable, fold_head, fold_reprogrammer, folded_logits
from reprogram.model.methods import build_reprogrammer
from reprogram.model.recipes import BUILTIN

CLASSES = ("red disc", "green square", "blue stripes", "yellow dots")
M = 4


def _random_scores(classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(5, classes, per_class, generator=torch.Generator().manual_seed(seed)) * 10


def _assert_map(aggregator, classes: int, per_class: int) -> None:
    z = _random_scores(classes, per_class)
    linear = aggregator.linear_map()
    assert linear.shape == (classes * per_class, classes) and linear.dtype == torch.float32
    torch.testing.assert_close(z.reshape(len(z), -1) @ linear, aggregator(z), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("per_class", [1, 5])  # 1: a template method, whose map is the identity
def test_mean_map_is_block_diagonal_one_over_m(per_class):
    mean = Mean(3, per_class)
    _assert_map(mean, 3, per_class)
    if per_class == 1:
        torch.testing.assert_close(mean.linear_map(), torch.eye(3))
    assert float(mean.linear_map().sum()) == pytest.approx(3.0)


def test_prm_map_holds_its_weights():
    prm = ReweightingMatrix(3, 4)
    weights = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    prm.prm.weights.copy_(weights / weights.sum(dim=1, keepdim=True))
    _assert_map(prm, 3, 4)
    linear = prm.linear_map().view(3, 4, 3)
    torch.testing.assert_close(linear[1, :, 1], prm.prm.weights[1])
    assert float(linear[1, :, 0].abs().sum()) == 0  # a class mixes only its own scores


def test_top_k_means_give_no_map_and_say_why():
    sets = torch.tensor([[0, 0, 0, 1, 1, 1]] * 3)
    aggregator = MeanTopK(sets, top_k=2)
    assert aggregator.linear_map() is None
    assert "top-k" in aggregator.not_foldable_reason
    with pytest.raises(ValueError, match="shape"):
        Mean().linear_map()


def test_fold_head_by_hand():
    """Two prompts, two classes, one text each: W_g = s · t_gᵀ A_g."""
    texts = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # C=2, M=1, D=2
    groups = torch.tensor([[0], [1]])
    head = fold_head(texts, groups, torch.eye(2), 10.0, 3)
    assert head.shape == (3, 2, 2)
    torch.testing.assert_close(head[0], torch.tensor([[10.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(head[1], torch.tensor([[0.0, 0.0], [0.0, 10.0]]))
    assert float(head[2].abs().sum()) == 0  # a prompt without texts adds nothing


def _descriptions(recipe) -> list[tuple[str, dict[str, list[str]]]]:
    """In-memory description files for a recipe's text source (3 causes for per-cause ones)."""
    stems = [f"cse_{n}" for n in (1, 2, 3)] if recipe.texts.per_cause else recipe.texts.kinds
    return [
        (
            f"{stem}.json",
            {c: [f"{stem} sentence {j} about the {c}." for j in range(6)] for c in CLASSES},
        )
        for stem in stems
    ]


def _randomise(model, seed: int) -> None:
    """Random prompts and random aggregation weights (PRM, or any float state of a head)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if model.prompts.theta.numel():
            theta = model.prompts.theta
            theta.copy_(torch.randn(theta.shape, generator=generator))
        for tensor in [*model.aggregator.parameters(), *model.aggregator.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.05)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("random:tiny")


@pytest.mark.parametrize("recipe", BUILTIN, ids=lambda r: r.name)
def test_folded_logits_equal_the_training_time_logits(recipe, backbone):
    from reprogram.model.options import MethodOptions

    options = MethodOptions(**{**recipe.overrides, "m": M})
    model = build_reprogrammer(
        recipe.name, backbone, CLASSES, _descriptions(recipe), options, seed=3
    ).eval()
    _randomise(model, seed=7)
    images = torch.rand(6, 3, model.image_size, model.image_size, generator=torch.Generator())
    if model.aggregator.linear_map() is None:
        with pytest.raises(NotFoldable, match=f"method '{recipe.name}' does not fold"):
            fold_reprogrammer(model)
        return
    head = fold_reprogrammer(model)
    assert head.shape == (model.prompts.count, backbone.embed_dim, len(CLASSES))
    with torch.no_grad():
        expected = model(images).logits
        folded = folded_logits(model.image_features(images), head)
    assert expected.dtype == folded.dtype == torch.float32
    scale = float(expected.abs().max())
    assert float((folded - expected).abs().max()) <= 1e-5 * scale
    assert float(expected.std()) > 1e-3 * scale  # the logits differ between images and classes
