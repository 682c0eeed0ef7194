"""Every method's ``fit`` against a plain reimplementation from raw open_clip calls.

One short engine run per method (default settings except tiny epochs, batch and m; fp32; a
non-zero weight decay; 12 training images in batches of 5, so the last batch is ragged) is
compared with the published maths (docs/methods.md) written here without the library: text
features from ``open_clip.tokenize`` + ``encode_text``; images decoded with PIL and torchvision
(``Resize`` + ``CenterCrop``, or ``Resize`` + ``resized_crop`` + flip when augmenting); the
padding prompt (image at 192/224 of the input, zero padding, ``sigmoid(theta)`` on the frame,
then CLIP normalisation), VP's unconstrained 30/224 frame added to the normalised full-size
image, or no prompt; mean, AttrVR's alpha-mixed mean-top-k, or DVP's PRM; sklearn's k-means for
DVP-cls; ``torch.optim.SGD`` under ``CosineAnnealingLR(T_max = epochs x steps per epoch)``,
stepped only in training epochs; epoch 0 only estimates the PRM for DVP.

Only the frozen weights (the run's own open_clip module), the data order and the augmentation
boxes come from the engine: the order and boxes are drawn from the engine's per-epoch generator
with its own box sampler, so both sides crop the same boxes. The sampled description texts are
the engine's (its seeding is its own), checked against the published sampling rule.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from helpers import make_folder_dataset, quick_config
from PIL import Image
from torchvision.transforms import InterpolationMode

from reprogram.data.images import random_resized_crop_params  # the engine's box sampler
from reprogram.engine.runs import load_run
from reprogram.engine.train import epoch_generator, fit

pytestmark = pytest.mark.numeric  # also run on other kernel paths: make test-kernels

EPOCHS, BATCH, M = 3, 5, 5
LR, MOMENTUM, WEIGHT_DECAY = 40.0, 0.9, 5e-3  # the published optimiser, plus weight decay
TOP_K, ALPHA, CLUSTERS = 3, 0.5, 3  # published PRM / AttrVR top-k, AttrVR alpha; DVP-cls v
TEMPLATE = "This is a photo of {}."
CLASSES = ("blue stripes", "green square", "red disc", "yellow dots")  # sorted: label order
COUNTS = (("train", 3), ("val", 2), ("test", 3))  # 12 training images: batches 5, 5, 2
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
BICUBIC = InterpolationMode.BICUBIC

# valid sentences per class and file: more than m (sampled without replacement), exactly m and
# fewer than m (with replacement)
VALID = {
    "cse_1": (8, 5, 3, 5),
    "cse_2": (5, 3, 8, 5),
    "cse_3": (3, 8, 5, 5),
    "des": (8, 5, 5, 3),
    "dist": (5, 8, 3, 5),
}
FILES = {"zero-shot-desc": ["des"], "attrvr": ["des", "dist"], "dvp-cls": ["des"]}
FILES["dvp-cse"] = ["cse_1", "cse_2", "cse_3"]
PROMPT = {"zero-shot": "none", "zero-shot-desc": "none", "vp": "watermark"}  # others: padding
AGGREGATION = {"attrvr": "mean-top-k", "dvp-cse": "prm", "dvp-cls": "prm"}  # others: mean
# Augmentation off: the same float maths on both sides (measured: 2e-7 on prompts, 1e-6 on
# logits). On: the engine resizes crops in float, the reference rounds them to uint8 as
# torchvision (and the published PIL pipeline) does, up to 2/255 per pixel; measured, that moves
# the prompts by at most 0.4% of their largest entry (1.1e-3), epoch losses by 1.1e-4 and logits
# by 1e-4, while flipping no image, a box sampled on (w, h), no weight decay, a cosine over the
# training steps only or a 1-px narrower VP frame move the prompts by 13% of it or more.
TOLERANCE = {  # prompts: a fraction of their largest entry; losses, logits: absolute
    False: {"theta": 1e-4, "loss": 1e-5, "logits": 2e-5, "images": 0},
    True: {"theta": 0.02, "loss": 5e-4, "logits": 1e-3, "images": 1},
}


def sentences(key: str, name: str, count: int) -> list[str]:
    """``count`` valid sentences (with spaces around them; the last exactly 20 characters as
    written, 19 once stripped) and three that are not (short, short with padding, 19
    characters)."""
    valid = [f"  {key}: the {name}, sentence {j} of the file.\n" for j in range(count - 1)]
    valid.append(f"{key} {name}"[:18].ljust(19, ".") + "\t")
    return valid + ["too short", "  short, padded  ", "x" * 19]


def valid_sentences(key: str, name: str) -> list[str]:
    """The published rule: sentences of at least 20 characters as written (kept stripped)."""
    index = CLASSES.index(name)
    return [s.strip() for s in sentences(key, name, VALID[key][index]) if len(s) >= 20]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = make_folder_dataset(tmp_path_factory.mktemp("maths") / "data", CLASSES, COUNTS)
    for key, counts in VALID.items():
        data = {name: sentences(key, name, n) for name, n in zip(CLASSES, counts, strict=True)}
        (root / "descriptions" / f"{key}.json").write_text(json.dumps(data))
    return root


# -- the reference ------------------------------------------------------------------------------


def image_paths(root: Path, split: str) -> tuple[list[Path], torch.Tensor]:
    """Class folders in name order (the labels), files in name order within each."""
    paths, labels = [], []
    for label, name in enumerate(CLASSES):
        found = sorted((root / split / name).glob("*.png"))
        paths += found
        labels += [label] * len(found)
    return paths, torch.tensor(labels)


def resized(path: Path, size: int) -> torch.Tensor:
    """torchvision's Resize(size, bicubic) on the PIL image, as a uint8 tensor."""
    with Image.open(path) as image:
        return TF.pil_to_tensor(TF.resize(image.convert("RGB"), size, BICUBIC))


def center_images(paths: list[Path], size: int) -> torch.Tensor:
    """Resize(size) + CenterCrop(size) + ToTensor."""
    return torch.stack([TF.center_crop(resized(p, size), size) for p in paths]).float() / 255


def augmented(images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, size: int):
    """RandomResizedCrop(size, bicubic) at the given boxes, then the given flips."""
    out = []
    for image, (top, left, h, w), flip in zip(images, boxes.long().tolist(), flips, strict=True):
        crop = TF.resized_crop(image, top, left, h, w, [size, size], BICUBIC, antialias=True)
        out.append(TF.horizontal_flip(crop) if flip else crop)
    return torch.stack(out).float() / 255


class Reference:
    """One method's forward pass, from raw open_clip calls on the run's frozen weights."""

    def __init__(self, clip, method: str, texts: list[list[str]]) -> None:
        self.clip, self.method = clip, method
        self.kind = PROMPT.get(method, "padding")
        self.aggregation = AGGREGATION.get(method, "mean")
        size = clip.visual.image_size
        self.input = size[0] if isinstance(size, (tuple, list)) else size  # 56 for random:tiny
        self.pad = self.input * 16 // 224  # the padding prompt: 16 px at 224 (192 inside)
        self.image_size = self.input - 2 * self.pad if self.kind == "padding" else self.input
        width = {"padding": self.pad, "watermark": round(self.input * 30 / 224), "none": 0}
        self.mask = torch.zeros(self.input, self.input)
        if self.kind != "none":
            self.mask[:] = 1
            w = width[self.kind]
            self.mask[w : self.input - w, w : self.input - w] = 0
        classes, per_class = len(texts), len(texts[0])
        with torch.no_grad():
            tokens = open_clip.tokenize([t for row in texts for t in row])
            features = F.normalize(clip.encode_text(tokens).float(), dim=-1)
        self.texts = features.view(classes, per_class, -1)
        self.scale = float(clip.logit_scale.exp())
        self.groups = torch.zeros(classes, per_class, dtype=torch.long)
        if method == "dvp-cse":  # cause i's m columns are scored by prompt i
            self.groups = (
                torch.arange(per_class).div(M, rounding_mode="floor").expand_as(self.groups)
            )
        if method == "dvp-cls":  # the published call: sklearn's default n_init
            from sklearn.cluster import KMeans

            flat = features.double().numpy()
            labels = KMeans(n_clusters=CLUSTERS, random_state=0).fit_predict(flat)
            self.groups = torch.from_numpy(labels).long().view(classes, per_class)
        count = int(self.groups.max()) + 1 if self.kind != "none" else 0
        self.theta = torch.zeros(count, 3, self.input, self.input)
        self.omega = torch.full((classes, per_class), 1 / per_class)

    def prompted(self, x: torch.Tensor, theta_i: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "padding":
            canvas = F.pad(x, (self.pad,) * 4) + torch.sigmoid(theta_i) * self.mask
            return (canvas - MEAN) / STD
        if self.kind == "watermark":
            return (x - MEAN) / STD + theta_i * self.mask
        return (x - MEAN) / STD

    def scores(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """z[b, c, j] = s cos(f_img(P_g(c,j)(x_b)), f_txt(t_cj)): B×C×M."""
        prompts = theta if self.kind != "none" else [None]
        total = 0
        for i, theta_i in enumerate(prompts):
            feature = F.normalize(self.clip.encode_image(self.prompted(x, theta_i)), dim=-1)
            own = (self.groups == i).float()
            total = total + self.scale * torch.einsum("bd,cjd->bcj", feature, self.texts) * own
        return total

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        if self.aggregation == "prm":
            return (self.omega * z).sum(dim=-1)
        if self.aggregation == "mean-top-k":
            des, dist = z[..., :M], z[..., M:]
            top = [part.topk(TOP_K, dim=-1).values.mean(dim=-1) for part in (des, dist)]
            return ALPHA * top[0] + (1 - ALPHA) * top[1]
        return z.mean(dim=-1)

    def train(self, paths: list[Path], labels: torch.Tensor, augment: bool, seed: int):
        """The published loop; returns each epoch's mean loss and training accuracy."""
        if augment:
            whole = [resized(p, self.image_size) for p in paths]
            sizes = torch.tensor([image.shape[1:] for image in whole])
        else:
            images = center_images(paths, self.image_size)
        theta = self.theta.clone().requires_grad_(True)
        optimizer = torch.optim.SGD([theta], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        steps = math.ceil(len(labels) / BATCH)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * steps)
        history = []
        for epoch in range(EPOCHS):
            generator = epoch_generator(seed, epoch)
            order = torch.randperm(len(labels), generator=generator)
            counts = torch.zeros_like(self.omega)
            loss_sum, correct = 0.0, 0
            estimate_only = self.aggregation == "prm" and epoch == 0
            for start in range(0, len(order), BATCH):
                index = order[start : start + BATCH]
                y = labels[index]
                if augment:
                    boxes = random_resized_crop_params(sizes[index], generator)
                    flips = torch.rand(len(index), generator=generator) < 0.5
                    x = augmented([whole[i] for i in index], boxes, flips, self.image_size)
                else:
                    x = images[index]
                with torch.set_grad_enabled(not estimate_only):
                    z = self.scores(x, theta)
                    logits = self.logits(z)
                    loss = F.cross_entropy(logits, y)
                if not estimate_only:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                if self.aggregation == "prm":  # top-k of the own class, from this pass
                    own = z.detach()[torch.arange(len(y)), y]
                    for row, label in zip(own.topk(TOP_K, dim=1).indices, y, strict=True):
                        counts[label, row] += 1
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(dim=1) == y).sum())
            if self.aggregation == "prm":
                self.omega = counts / counts.sum(dim=1, keepdim=True)
            history.append((loss_sum / len(labels), correct / len(labels)))
        self.theta = theta.detach()
        return history


# -- the comparison -----------------------------------------------------------------------------


def check_sampled_texts(method: str, texts: list[list[str]]) -> None:
    """The published rule: per class and file, m of the valid sentences, without replacement
    when there are more than m, with replacement otherwise; class-major, files in order."""
    if method not in FILES:
        assert texts == [[TEMPLATE.format(name)] for name in CLASSES]
        return
    assert len(texts) == len(CLASSES)
    repeated_at_m = []
    for name, row in zip(CLASSES, texts, strict=True):
        assert len(row) == M * len(FILES[method])
        for block, key in enumerate(FILES[method]):
            drawn, valid = row[block * M : (block + 1) * M], valid_sentences(key, name)
            assert set(drawn) <= set(valid), (key, name)
            repeats = max(Counter(drawn).values()) > 1
            if len(valid) > M:
                assert not repeats, (key, name)
            elif len(valid) == M:
                repeated_at_m.append(repeats)
    # with replacement at exactly m: all blocks without a repeat has chance (5!/5^5)^2 < 0.2%
    assert len(repeated_at_m) >= 2 and any(repeated_at_m)


CASES = [("zero-shot", False), ("zero-shot-desc", False)] + [
    (method, augment)
    for method in ("vp", "ar", "attrvr", "dvp-cse", "dvp-cls")
    for augment in (False, True)
]


@pytest.mark.parametrize(("method", "augment"), CASES)
def test_engine_run_is_the_plain_maths(tmp_path, dataset, method, augment):
    config = quick_config(
        dataset,
        method,
        epochs=EPOCHS,
        batch_size=BATCH,
        shots=COUNTS[0][1],
        m=M,
        weight_decay=WEIGHT_DECAY,
        augment=augment,
        eval_every=EPOCHS,  # validation only after the last epoch: the last state is selected
        precision="fp32",
        device="cpu",
    )
    results = fit(config, tmp_path / "run")
    run = load_run(tmp_path / "run")
    clip = run.backbone.model
    assert isinstance(clip, open_clip.model.CLIP)
    assert run.classnames == list(CLASSES)

    texts = run.model.bank.texts
    check_sampled_texts(method, texts)
    reference = Reference(clip, method, texts)
    if method == "dvp-cls":
        assert torch.equal(run.model.bank.groups, reference.groups)

    tolerance = TOLERANCE[augment]
    if reference.kind != "none":
        paths, labels = image_paths(dataset, "train")
        history = reference.train(paths, labels, augment, config.seed)
        rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
        assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
        for row, (loss, accuracy) in zip(rows, history, strict=True):
            assert row["loss"] == pytest.approx(loss, rel=0, abs=tolerance["loss"])
            off = tolerance["images"] / len(labels) + 1e-9  # training images predicted otherwise
            assert row["train_acc"] == pytest.approx(accuracy, abs=off)
        largest = float(reference.theta.abs().max())
        assert largest > 0.02  # the prompts did move
        difference = float((run.model.prompts.theta.detach() - reference.theta).abs().max())
        assert difference <= tolerance["theta"] * largest

    # the loaded run on the reference's own test images, and its reported test predictions
    paths, labels = image_paths(dataset, "test")
    images = center_images(paths, reference.image_size)
    with torch.no_grad():
        expected = reference.logits(reference.scores(images, reference.theta))
        ours = run.model(images).logits
    torch.testing.assert_close(ours, expected, rtol=0, atol=tolerance["logits"])
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for label, predicted in zip(labels.tolist(), expected.argmax(dim=1).tolist(), strict=True):
        confusion[label, predicted] += 1
    assert results["test_confusion"] == confusion.tolist()
    assert results["test_accuracy"] == pytest.approx(np.trace(confusion) / len(labels))
