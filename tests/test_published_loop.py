"""``fit`` with default settings against the PUBLISHED training loop, re-implemented here.

The loop below follows the structure of the authors' DVP scripts (see docs/methods.md): one SGD
optimiser (momentum 0.9) and one ``CosineAnnealingLR(T_max = epochs x steps per epoch)`` per
prompt; epoch 0 only estimates the PRM (no step, so the schedule never reaches 0); every later
epoch trains, re-estimates the PRM from the top-k counts of its own forward passes, then
evaluates the test split; the best test accuracy is kept with a strict ``>`` (earliest tie).
The prompts are applied one after another; the PRM is the scripts' (C·M)×C matrix. Same frozen
model, images (augmentation off), texts and data order as the engine; fp32 on both sides.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_folder_dataset, quick_config

import reprogram.engine.train as train_module
from reprogram.data import decode_center
from reprogram.engine.setup import load_data
from reprogram.engine.train import epoch_generator, fit

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels

EPOCHS = 4
BATCH = 4  # 12 training images: 3 steps per epoch, 12 in the schedule, 9 taken
TOP_K = 3
LR, MOMENTUM = 40.0, 0.9  # the published (and default) optimiser


def published_prm(top: np.ndarray, labels: np.ndarray, classes: int, per_class: int):
    """The scripts' PRM: (C·M)×C, column c = P(description | class c) from top-k counts."""
    counts = np.zeros((classes, per_class * classes))
    for row, label in zip(top, labels, strict=True):
        for j in row:
            counts[label, label * per_class + j] += 1
    return torch.tensor((counts / counts.sum(axis=1, keepdims=True)).T).float()


def initial_prm(classes: int, per_class: int) -> torch.Tensor:
    prm = np.zeros((classes, per_class * classes))
    for c in range(classes):
        prm[c, c * per_class : (c + 1) * per_class] = 1 / per_class
    return torch.tensor(prm.T).float()


class PublishedNetwork:
    """Description scores B×(C·M) with the prompts run one after another, as the scripts do."""

    def __init__(self, model, method: str) -> None:
        backbone, prompts = model.backbone, model.prompts
        self.backbone, self.method = backbone, method
        self.frame = prompts.frame
        size = backbone.input_size
        self.mask = torch.ones(size, size)
        self.mask[self.frame : size - self.frame, self.frame : size - self.frame] = 0
        self.mean = torch.tensor(backbone.mean).view(3, 1, 1)
        self.std = torch.tensor(backbone.std).view(3, 1, 1)
        self.scale = float(backbone.logit_scale)
        self.texts = model.text_features  # C×M×d, class-major, the engine's sampled texts
        self.groups = model.bank.groups  # C×M prompt of each description
        self.count = int(self.groups.max()) + 1
        self.theta = [torch.zeros(3, size, size, requires_grad=True) for _ in range(self.count)]

    def prompted(self, x: torch.Tensor, i: int) -> torch.Tensor:
        canvas = F.pad(x, (self.frame,) * 4) + torch.sigmoid(self.theta[i]) * self.mask
        return (canvas - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        classes, per_class, dim = self.texts.shape
        if self.method == "dvp-cse":  # cause i scores its own m columns; concatenated per class
            m = per_class // self.count
            parts = []
            for i in range(self.count):
                emb = self.backbone.encode_image(self.prompted(x, i))
                own = self.texts[:, i * m : (i + 1) * m].reshape(-1, dim)
                parts.append((self.scale * emb @ own.T).reshape(-1, classes, m))
            return torch.cat(parts, dim=2).reshape(len(x), -1)
        total = 0  # dvp-cls: the sum of the clusters' masked score matrices
        for i in range(self.count):
            emb = self.backbone.encode_image(self.prompted(x, i))
            mask = (self.groups.reshape(-1, 1) == i).float()
            total = total + self.scale * emb @ (self.texts.reshape(-1, dim) * mask).T
        return total


def published_loop(model, method, train_x, train_y, test_x, test_y, seed):
    """PRM and prompts after every epoch, the best test accuracy and its epoch (1-based)."""
    net = PublishedNetwork(model, method)
    classes, per_class = model.bank.groups.shape
    steps = math.ceil(len(train_y) / BATCH)
    optimizers = [torch.optim.SGD([t], lr=LR, momentum=MOMENTUM) for t in net.theta]
    schedulers = [
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS * steps) for o in optimizers
    ]
    prm = initial_prm(classes, per_class)
    best_acc, best_epoch, per_epoch = 0.0, None, []
    for epoch in range(EPOCHS):
        order = torch.randperm(len(train_y), generator=epoch_generator(seed, epoch))
        tops, labels = [], []
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            x, y = train_x[index], train_y[index]
            if epoch:
                for optimizer in optimizers:
                    optimizer.zero_grad()
                fx = net(x)
                loss = F.cross_entropy(fx @ prm, y, reduction="mean")
                own = fx.detach().reshape(len(y), classes, per_class)[torch.arange(len(y)), y]
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                for scheduler in schedulers:
                    scheduler.step()
            else:
                with torch.no_grad():
                    fx = net(x)
                own = fx.reshape(len(y), classes, per_class)[torch.arange(len(y)), y]
            tops.append(own.topk(TOP_K, dim=1).indices.numpy())
            labels.append(y.numpy())
        prm = published_prm(np.vstack(tops), np.concatenate(labels), classes, per_class)
        per_epoch.append((prm.clone(), torch.stack([t.detach().clone() for t in net.theta])))
        if epoch:
            with torch.no_grad():
                acc = int(((net(test_x) @ prm).argmax(1) == test_y).sum()) / len(test_y)
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch + 1
    return per_epoch, best_acc, best_epoch


def prm_as_matrix(weights: torch.Tensor) -> torch.Tensor:
    """The engine's block PRM (C×M) in the scripts' (C·M)×C layout."""
    classes, per_class = weights.shape
    matrix = torch.zeros(classes * per_class, classes)
    for c in range(classes):
        matrix[c * per_class : (c + 1) * per_class, c] = weights[c]
    return matrix


def engine_run(monkeypatch, tmp_path, method, **settings):
    """``fit`` with default settings (augmentation off), recording PRM and prompts per epoch."""
    recorded = []
    original = train_module.train_one_epoch

    def recording(model, *args, **kwargs):
        row = original(model, *args, **kwargs)
        recorded.append(
            (model.aggregator.prm.weights.clone(), model.prompts.theta.detach().clone())
        )
        return row

    monkeypatch.setattr(train_module, "train_one_epoch", recording)
    data = make_folder_dataset(tmp_path / "data")
    config = quick_config(
        data, method, epochs=EPOCHS, batch_size=BATCH, augment=False, clusters=2, **settings
    )
    results = fit(config, tmp_path / "run")
    monkeypatch.undo()
    return config, results, recorded


@pytest.mark.parametrize("method", ["dvp-cse", "dvp-cls"])
def test_default_fit_is_the_published_loop(tmp_path, monkeypatch, method):
    torch.manual_seed(0)
    config, results, recorded = engine_run(monkeypatch, tmp_path, method, select_on="test")
    from reprogram.engine.runs import load_run

    model = load_run(tmp_path / "run").model
    if method == "dvp-cls":  # the published grouping call on the same texts
        from sklearn.cluster import KMeans

        flat = F.normalize(model.text_features.reshape(-1, model.text_features.shape[-1]), dim=-1)
        labels = KMeans(n_clusters=2, random_state=0).fit(flat.numpy()).labels_
        assert model.bank.groups.flatten().tolist() == labels.tolist()
    splits = load_data(config)
    train = decode_center(splits.train, model.image_size)
    test = decode_center(splits.test, model.image_size)
    per_epoch, best_acc, best_epoch = published_loop(
        model,
        method,
        train.pixels.float() / 255,
        train.labels,
        test.pixels.float() / 255,
        test.labels,
        config.seed,
    )
    assert len(recorded) == len(per_epoch) == EPOCHS
    for (prm, theta), (ref_prm, ref_theta) in zip(recorded, per_epoch, strict=True):
        torch.testing.assert_close(prm_as_matrix(prm), ref_prm, rtol=0, atol=1e-6)
        torch.testing.assert_close(theta, ref_theta, rtol=1e-5, atol=1e-5)
    assert recorded[-1][1].abs().max() > 1e-2  # the prompts did move
    assert results["test_accuracy"] == pytest.approx(best_acc, abs=1e-9)
    assert results["selected_epoch"] == best_epoch


def test_the_training_steps_schedule_is_not_the_published_one(tmp_path, monkeypatch):
    """The comparison above sees the schedule: its option departs from the published loop."""
    torch.manual_seed(0)
    config, _, recorded = engine_run(
        monkeypatch, tmp_path, "dvp-cse", lr_schedule_span="training-steps"
    )
    from reprogram.engine.runs import load_run

    model = load_run(tmp_path / "run").model
    train = decode_center(load_data(config).train, model.image_size)
    test = decode_center(load_data(config).test, model.image_size)
    per_epoch, _, _ = published_loop(
        model,
        "dvp-cse",
        train.pixels.float() / 255,
        train.labels,
        test.pixels.float() / 255,
        test.labels,
        config.seed,
    )
    assert (recorded[-1][1] - per_epoch[-1][1]).abs().max() > 1e-3
