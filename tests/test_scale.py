"""Costs that grow as they should: training pixels, fingerprints, scoring, prompt application."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_folder_dataset, quick_config
from PIL import Image

from reprogram.backbones import load_backbone
from reprogram.backbones.base import fingerprint_state_dict
from reprogram.data.images import decode_short_side, decode_short_side_buckets, size_buckets
from reprogram.data.readers import Sample
from reprogram.engine.batches import TrainData, load_train_data
from reprogram.engine.setup import prepare
from reprogram.model.methods import Reprogrammer, group_order
from reprogram.model.prompts import PromptBank

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels


def _mixed_images(folder, count: int = 24, seed: int = 0) -> list[Sample]:
    """Portrait, landscape and square images of varied aspect ratios."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(count):
        long = int(rng.integers(20, 61))
        shape = [(long, 20), (20, long), (20, 20)][i % 3]
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(str(path), i % 3))
    return samples


# -- training pixels ----------------------------------------------------------------------------
def test_size_buckets_bound_the_padding():
    rng = np.random.default_rng(1)
    shapes = [(int(h), int(w)) for h, w in rng.integers(10, 200, (300, 2))]
    groups = size_buckets(shapes, 1.1)
    assert sorted(i for g in groups for i in g) == list(range(len(shapes)))
    for group in groups:
        height = max(shapes[i][0] for i in group)
        width = max(shapes[i][1] for i in group)
        assert height * width <= 1.1 * min(shapes[i][0] * shapes[i][1] for i in group)


def test_stored_training_pixels_follow_the_images_sizes(tmp_path):
    samples = _mixed_images(tmp_path / "images")
    bucketed = decode_short_side_buckets(samples, 16)
    own = int(sum(3 * h * w for h, w in bucketed.sizes.tolist()))
    canvas = decode_short_side(samples, 16)  # the old single canvas: as large as the largest
    assert bucketed.nbytes <= 1.2 * own
    assert canvas.pixels.numel() > 2 * own
    # each image is stored whole where bucket/row say
    for i in range(len(samples)):
        h, w = bucketed.sizes[i].tolist()
        stored = bucketed.buckets[int(bucketed.bucket[i])][int(bucketed.row[i]), :, :h, :w]
        assert torch.equal(stored, canvas.pixels[i, :, :h, :w])


def test_shots_zero_mixed_orientations_stays_within_its_images(tmp_path):
    data = make_folder_dataset(tmp_path / "a", counts=(("train", 5), ("val", 1), ("test", 1)))
    for i, path in enumerate(sorted((data / "train").rglob("*.png"))):  # mixed orientations
        shape = [(40, 90), (90, 40), (56, 56), (40, 120), (70, 40)][i % 5]
        Image.fromarray(np.full((*shape, 3), 30 * (i % 7), dtype=np.uint8)).save(path)
    parts = prepare(quick_config(data, "dvp-cse", shots=0))
    train = load_train_data(parts, torch.device("cpu"))
    own = int(sum(3 * h * w for h, w in train.sizes.tolist()))
    assert len(train.labels) == 15 and len(train.buckets) > 1
    assert train.nbytes <= 1.2 * own


def test_bucketed_batches_equal_one_canvas(tmp_path):
    samples = _mixed_images(tmp_path / "images", count=18)
    bucketed = decode_short_side_buckets(samples, 16)
    canvas = decode_short_side(samples, 16)
    labels = bucketed.labels
    one = TrainData(canvas.pixels, canvas.sizes, labels, True, 16, [])
    many = TrainData(
        bucketed.buckets, bucketed.sizes, labels, True, 16, [], bucketed.bucket, bucketed.row
    )
    index = torch.randperm(18, generator=torch.Generator().manual_seed(3))[:11]
    for part in (slice(None), slice(0, 6), slice(6, 11), slice(11, 11)):
        a, la = one.batch(index, torch.Generator().manual_seed(5), part)
        b, lb = many.batch(index, torch.Generator().manual_seed(5), part)
        assert torch.equal(la, lb) and a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    plain = TrainData(canvas.pixels, canvas.sizes, labels, False, 16, [])
    images, _ = plain.batch(index, torch.Generator())
    assert torch.equal(images, canvas.pixels[index].float() / 255)


# -- fingerprint ---------------------------------------------------------------------------------
def test_fingerprint_is_taken_on_the_host_and_unchanged():
    host = load_backbone("random:tiny")
    old = fingerprint_state_dict(host.state_dict())  # today's computation
    assert host.fingerprint == old
    # on a device the weights cannot be read back from ("meta"), the value is still there
    moved = load_backbone("random:tiny", device="meta")
    assert next(moved.parameters()).device.type == "meta"
    assert moved.fingerprint == old


# -- scoring ---------------------------------------------------------------------------------------
def _old_scores(features, text_features, groups, scale):
    similarities = torch.einsum("vbd,cmd->vbcm", features.float(), text_features)
    index = groups.unsqueeze(0).unsqueeze(0).expand(1, features.shape[1], -1, -1)
    return scale * similarities.gather(0, index).squeeze(0)


def _scorer(groups, text_features, scale):
    """The fields ``scores_from_features`` reads, without a backbone."""
    model = torch.nn.Module()
    order, model._group_sizes = group_order(groups)
    model.groups = groups
    model._grouped_texts = text_features.flatten(0, 1)[order]
    model._ungroup = torch.argsort(order)
    model.logit_scale = scale
    return model


@pytest.mark.parametrize("kind", ["single", "by-file", "random", "unused-prompt"])
def test_scores_equal_the_full_einsum(kind):
    generator = torch.Generator().manual_seed(0)
    classes, per_class, dim, v = 7, 9, 16, 3
    if kind == "single":
        v, groups = 1, torch.zeros(classes, per_class, dtype=torch.long)
    elif kind == "by-file":
        groups = (torch.arange(per_class) // 3).expand(classes, -1).clone()
    elif kind == "random":  # k-means-like: any number of a class's texts in any group
        groups = torch.randint(0, v, (classes, per_class), generator=generator)
    else:  # the last prompt owns no text
        groups = torch.randint(0, v - 1, (classes, per_class), generator=generator)
    texts = torch.randn(classes, per_class, dim, generator=generator)
    texts = torch.nn.functional.normalize(texts, dim=-1)
    features = torch.randn(v, 5, dim, generator=generator, requires_grad=True)
    scores = Reprogrammer.scores_from_features(_scorer(groups, texts, 37.5), features)
    expected = _old_scores(features, texts, groups, 37.5)
    (grad,) = torch.autograd.grad(scores.square().sum(), features)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), features)
    # The same products summed in other shapes (one per prompt vs one einsum over all), which a
    # BLAS may split otherwise: equal to float32 rounding of the largest entry (measured, 200
    # seeds: exact on MKL's AVX-512 path, 3e-7 of it on its AVX2 path).
    for ours, reference in ((scores, expected), (grad, grad_expected)):
        largest = float(reference.detach().abs().max())
        torch.testing.assert_close(ours, reference, rtol=0, atol=2e-6 * largest)


# -- prompt application --------------------------------------------------------------------------
def _old_forward(bank: PromptBank, images: torch.Tensor) -> torch.Tensor:
    if bank.kind == "padding":
        f = bank.frame
        padded = torch.nn.functional.pad(images, (f, f, f, f), value=0.0)
        prompted = padded.unsqueeze(0) + bank.patterns().unsqueeze(1)
        return (prompted - bank.mean) / bank.std
    normalised = ((images - bank.mean) / bank.std).unsqueeze(0)
    if bank.kind == "watermark":
        return normalised + bank.patterns().unsqueeze(1)
    return normalised


@pytest.mark.parametrize("kind,count", [("padding", 3), ("watermark", 1), ("none", 1)])
def test_prompt_application_equals_the_unfused_maths(kind, count):
    bank = PromptBank(kind, count, 24, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    if kind != "none":
        with torch.no_grad():
            bank.theta.copy_(torch.randn(bank.theta.shape))
    images = torch.rand(4, 3, bank.image_size, bank.image_size, requires_grad=True)
    out, expected = bank(images), _old_forward(bank, images)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    if kind != "none":
        (g,) = torch.autograd.grad(out.square().sum(), bank.theta)
        (e,) = torch.autograd.grad(expected.square().sum(), bank.theta)
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
