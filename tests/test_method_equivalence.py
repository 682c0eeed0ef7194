"""Pins the DVP maths: our batched engine against a plain per-sample reading of the frozen.

The reference below is written from the team's reading of the paper (reference/dvp.md, kept outside
the repository), one sample, one prompt and one description at a time: pad, add sigmoid(theta) on
the frame, normalise, encode; score each description with its own prompt; class logit = sum_j
omega[c, j] z[c, j]; cross-entropy; SGD with momentum under a per-step cosine schedule over all
epochs' steps (advanced only by training steps, as published); omega re-estimated from each epoch's
top-3 counts.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from helpers import make_folder_dataset, quick_config

from reprogram.data import decode_center
from reprogram.engine.runs import load_run
from reprogram.engine.setup import load_data
from reprogram.engine.train import epoch_generator, fit

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels

EPOCHS = 3
LR = 40.0
MOMENTUM = 0.9
BATCH = 4
TOP_K = 3


class Frozen(NamedTuple):
    """What the spec reads from the trained model: the encoder, each description's group and
    text feature, the padding frame, the normalisation and the logit scale."""

    backbone: Any
    groups: torch.Tensor  # C×m prompt index of each description
    text_features: torch.Tensor  # C×m×D
    frame: int
    mean: torch.Tensor
    std: torch.Tensor
    scale: float

    @classmethod
    def of(cls, model) -> Frozen:
        prompts = model.prompts
        mean, std = prompts.mean.flatten(), prompts.std.flatten()
        backbone = model.backbone
        groups, features = model.bank.groups, model.text_features
        return cls(backbone, groups, features, prompts.frame, mean, std, backbone.logit_scale)


def prompted(frozen: Frozen, image, theta_i):
    """One image (3×s×s in [0,1]) through padding prompt i, normalised (3×S×S)."""
    frame = frozen.frame
    size = image.shape[-1] + 2 * frame
    canvas = torch.zeros(3, size, size)
    canvas[:, frame : frame + image.shape[-2], frame : frame + image.shape[-1]] = image
    mask = torch.ones(size, size)
    mask[frame : size - frame, frame : size - frame] = 0
    canvas = canvas + torch.sigmoid(theta_i) * mask
    return (canvas - frozen.mean.view(3, 1, 1)) / frozen.std.view(3, 1, 1)


def description_scores(frozen: Frozen, image, theta):
    """z[c, j] for one image, each description scored by the prompt of its group."""
    num_classes, per_class = frozen.groups.shape
    features = []
    for i in range(theta.shape[0]):
        f = frozen.backbone.encode_image(prompted(frozen, image, theta[i]).unsqueeze(0))[0]
        features.append(f)
    z = torch.zeros(num_classes, per_class)
    for c in range(num_classes):
        for j in range(per_class):
            group = int(frozen.groups[c, j])
            z[c, j] = frozen.scale * torch.dot(features[group], frozen.text_features[c, j])
    return z


def reference_training(frozen: Frozen, images, labels, seed):
    """The spec, sample by sample: epoch 0 estimates omega, later epochs train then re-estimate."""
    num_classes, per_class = frozen.groups.shape
    count = len(labels)
    size = frozen.backbone.input_size
    theta = torch.zeros(int(frozen.groups.max()) + 1, 3, size, size)
    omega = torch.full((num_classes, per_class), 1.0 / per_class)
    momentum = torch.zeros_like(theta)
    steps_per_epoch = math.ceil(count / BATCH)
    total_steps = EPOCHS * steps_per_epoch  # published: all epochs, stepped only in training
    step = 0
    for epoch in range(EPOCHS):
        order = torch.randperm(count, generator=epoch_generator(seed, epoch))
        counts = torch.zeros(num_classes, per_class)
        for start in range(0, count, BATCH):
            batch = order[start : start + BATCH]
            theta_var = theta.clone().requires_grad_(True)
            loss = torch.zeros(())
            for n in batch.tolist():
                z = description_scores(frozen, images[n], theta_var)
                logits = torch.stack(
                    [
                        sum(omega[c, j] * z[c, j] for j in range(per_class))
                        for c in range(num_classes)
                    ]
                )
                loss = loss + F.cross_entropy(logits.unsqueeze(0), labels[n].view(1)) / len(batch)
                for j in z[labels[n]].detach().topk(TOP_K).indices.tolist():
                    counts[labels[n], j] += 1
            if epoch > 0:
                (grad,) = torch.autograd.grad(loss, theta_var)
                lr = LR * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                momentum = grad.clone() if step == 0 else MOMENTUM * momentum + grad
                theta = theta - lr * momentum
                step += 1
        for c in range(num_classes):
            if counts[c].sum() > 0:
                omega[c] = counts[c] / counts[c].sum()
    return theta, omega


@pytest.mark.parametrize("method", ["dvp-cse", "dvp-cls"])
def test_one_engine_epoch_matches_per_sample_spec(tmp_path, method):
    torch.manual_seed(0)
    data = make_folder_dataset(tmp_path / "data")
    config = quick_config(
        data,
        method,
        epochs=EPOCHS,
        batch_size=BATCH,
        augment=False,
        lr=LR,
        momentum=MOMENTUM,
        prm_top_k=TOP_K,
        eval_every=EPOCHS,
        precision="fp32",
        device="cpu",
        clusters=2,
    )
    fit(config, tmp_path / "run")
    run = load_run(tmp_path / "run")
    model = run.model
    prompts = model.prompts

    if method == "dvp-cls":  # the spec's grouping: sklearn k-means, random_state 0, normalised
        from sklearn.cluster import KMeans

        flat = F.normalize(model.text_features.reshape(-1, model.text_features.shape[-1]), dim=-1)
        expected = KMeans(n_clusters=2, random_state=0).fit_predict(  # the published call
            flat.double().numpy()
        )
        assert torch.equal(model.bank.groups.flatten(), torch.from_numpy(expected).long())
    else:  # by cause: class c owns m columns per cause, in file order
        assert model.bank.groups[0].tolist() == [0] * 5 + [1] * 5 + [2] * 5

    splits = load_data(run.config)
    decoded = decode_center(splits.train, prompts.image_size)
    images = decoded.pixels.float() / 255
    frozen = Frozen.of(model)
    theta_ref, omega_ref = reference_training(frozen, images, decoded.labels, config.seed)
    torch.testing.assert_close(model.aggregator.prm.weights, omega_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prompts.theta.detach(), theta_ref, atol=1e-5, rtol=1e-5)
    assert prompts.theta.abs().max() > 1e-3  # the prompts did move

    # logits of the trained model on a batch, against the per-sample formula
    with torch.no_grad():
        ours = model(images[:5]).logits
        ref = [
            (omega_ref * description_scores(frozen, images[n], theta_ref)).sum(1) for n in range(5)
        ]
    torch.testing.assert_close(ours, torch.stack(ref), atol=1e-5, rtol=1e-5)


def test_bf16_runs_only_the_image_encoder_in_bf16(tmp_path):
    """Scores, logits and PRM counts are fp32 maths on the encoder's (bf16) features, even
    inside a caller's autocast."""
    from reprogram.engine.setup import prepare
    from reprogram.model.aggregation import ReweightingMatrix
    from reprogram.model.precision import Precision

    data = make_folder_dataset(tmp_path / "data")
    config = quick_config(data, "dvp-cse", precision="bf16", device="cpu")
    model = prepare(config).model
    with torch.no_grad():
        model.prompts.theta.normal_()
    precision = Precision.resolve(config.backbone.precision, torch.device("cpu"))
    assert precision.dtype == torch.bfloat16
    images = torch.rand(6, 3, model.image_size, model.image_size, generator=torch.Generator())
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        output = model(images, precision)
        with precision.encoder():
            features = model.image_features(images)
        assert features.dtype == torch.bfloat16  # the encoder did run in bf16
        expected = model.scores_from_features(features.float())  # fp32, outside any autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast changes nothing
            inside = model(images, precision)
    for out in (output, inside):
        assert out.scores.dtype == out.logits.dtype == torch.float32
        torch.testing.assert_close(out.scores, expected, rtol=0, atol=0)
        torch.testing.assert_close(out.logits, model.aggregator(expected), rtol=0, atol=0)
    counts = []
    for scores in (output.scores, expected):
        prm = ReweightingMatrix(*model.bank.groups.shape)
        prm.observe(scores, labels)
        counts.append(prm.prm.counts)
    assert torch.equal(counts[0], counts[1])


def test_a_bf16_run_counts_fp32_scores_and_reaches_fp32_accuracy(tmp_path, monkeypatch):
    from reprogram.model.prm import PRM

    observed = []
    original = PRM.observe

    def observe(self, scores, labels):
        observed.append(scores.dtype)
        return original(self, scores, labels)

    monkeypatch.setattr(PRM, "observe", observe)
    data = make_folder_dataset(tmp_path / "data", counts=(("train", 8), ("val", 4), ("test", 10)))
    results = {}
    for precision in ("bf16", "fp32"):
        config = quick_config(
            data, "dvp-cse", precision=precision, device="cpu", epochs=4, shots=8, lr=10.0
        )
        results[precision] = fit(config, tmp_path / precision)
    assert observed and set(observed) == {torch.float32}
    # 30 test images: within noise means at most 2 predictions apart
    assert abs(results["bf16"]["test_accuracy"] - results["fp32"]["test_accuracy"]) <= 2 / 30
    a, b = (load_run(tmp_path / p).model.aggregator.prm.weights for p in ("bf16", "fp32"))
    assert (a - b).abs().max() < 0.2
