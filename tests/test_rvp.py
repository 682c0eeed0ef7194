"""RVP and the trained heads: eqs 3-4 against a plain reimplementation, the fold contract,
parameter counts from the parts, training, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_same_run,
    cli,
    epochs_checkpointed,
    exit_codes,
    fork,
    kill_when,
    make_folder_dataset,
    quick_config,
)

from reprogram.backbones import load_backbone
from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.runs import load_run
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.model import parts
from reprogram.model.heads import DenseHead, LinearProbe, StructuredHead
from reprogram.model.methods import MethodOptions, build_reprogrammer
from reprogram.model.recipes import (
    Recipe,
    get_recipe,
    list_methods,
    register_method,
    unregister_method,
)

CLASSES = ["red disc", "green square", "blue stripes"]
M = 4


def _attributes() -> list[tuple[str, dict[str, list[str]]]]:
    data = {c: [f"attribute sentence {j} about the {c} here" for j in range(7)] for c in CLASSES}
    return [("des.json", data)]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("random:tiny")


def _rvp(backbone, method: str = "rvp"):
    return build_reprogrammer(method, backbone, CLASSES, _attributes(), MethodOptions(m=M))


def _randomise(model, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in [*model.prompt_parameters(), *model.head_parameters()]:
            parameter.copy_(torch.randn(parameter.shape, generator=generator))


def _plain_rvp(backbone, model, images, theta, P, E):
    """Eqs 3-4 written out: padding prompt, s·cos, row softmax of P, f (I + E)."""
    size, inner = backbone.input_size, images.shape[-1]
    frame = (size - inner) // 2
    padded = torch.zeros(images.shape[0], 3, size, size)
    padded[:, :, frame : frame + inner, frame : frame + inner] = images
    mask = torch.ones(size, size)
    mask[frame : size - frame, frame : size - frame] = 0
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    prompted = (padded + torch.sigmoid(theta) * mask - mean) / std
    image = backbone.encode_image(prompted)
    image = image / image.norm(dim=-1, keepdim=True)
    texts = backbone.encode_text(model.bank.flat()).view(len(CLASSES), M, -1)
    texts = texts / texts.norm(dim=-1, keepdim=True)
    z = backbone.logit_scale * torch.einsum("bd,cmd->bcm", image, texts)
    weights = torch.exp(P) / torch.exp(P).sum(dim=1, keepdim=True)
    base = (weights.unsqueeze(0) * z).sum(-1)
    return base @ (torch.eye(len(CLASSES)) + E)


def test_rvp_logits_and_gradients_equal_equations_3_and_4(backbone):
    model = _rvp(backbone)
    _randomise(model)
    assert [p.shape for p in model.head_parameters()] == [(3, M), (3, 3)]
    images = torch.rand(5, 3, model.image_size, model.image_size)
    labels = torch.tensor([0, 1, 2, 1, 0])
    output = model(images)
    F.cross_entropy(output.logits, labels).backward()

    theta = model.prompts.theta.detach()[0].clone().requires_grad_(True)
    P = model.aggregator.P.detach().clone().requires_grad_(True)
    E = model.aggregator.E.detach().clone().requires_grad_(True)
    reference = _plain_rvp(backbone, model, images, theta, P, E)
    F.cross_entropy(reference, labels).backward()

    torch.testing.assert_close(output.logits, reference, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(model.prompts.theta.grad[0], theta.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(model.aggregator.P.grad, P.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(model.aggregator.E.grad, E.grad, rtol=1e-4, atol=1e-7)
    assert float(P.grad.abs().max()) > 0 and float(E.grad.abs().max()) > 0
    rows = model.aggregator.intra_weights().detach()
    torch.testing.assert_close(rows.sum(-1), torch.ones(3))
    assert float(rows.min()) > 0 and not torch.allclose(rows, torch.full_like(rows, 1 / M))


def test_zero_initialised_rvp_is_the_uniform_average(backbone):
    mean = Recipe("test-attr-mean", parts.PADDING, parts.ATTRIBUTES, parts.SINGLE, parts.MEAN, "")
    register_method(mean)
    try:
        plain = _rvp(backbone, "test-attr-mean")
        for method in ("rvp", "rvp-no-p", "rvp-no-e", "attribute-lp"):
            model = _rvp(backbone, method)
            assert model.head_parameters(), method
            with torch.no_grad():
                theta = torch.randn(model.prompts.theta.shape, generator=torch.Generator())
                model.prompts.theta.copy_(theta)
                plain.prompts.theta.copy_(theta)
            images = torch.rand(3, 3, model.image_size, model.image_size)
            with torch.no_grad():
                got, want = model(images), plain(images)
            assert torch.equal(got.scores, want.scores)
            torch.testing.assert_close(got.logits, want.logits, rtol=1e-6, atol=1e-5)
    finally:
        unregister_method("test-attr-mean")


@pytest.mark.parametrize(
    "head",
    [
        StructuredHead(3, M),
        StructuredHead(3, M, intra=False),
        StructuredHead(3, M, inter=False),
        DenseHead(3, M),
    ],
    ids=["rvp", "no-p", "no-e", "dense"],
)
def test_heads_fold_into_one_linear_map(head):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    z = torch.randn(6, 3, M, generator=generator) * 20
    A = head.linear_map()
    assert A.shape == (3 * M, 3)
    torch.testing.assert_close(z.reshape(6, 3 * M) @ A, head(z), rtol=1e-5, atol=1e-4)


def test_linear_probe_reads_the_image_feature(backbone):
    model = build_reprogrammer("linear-probe", backbone, CLASSES, options=MethodOptions())
    dim = model.text_features.shape[-1]
    assert [p.shape for p in model.head_parameters()] == [(dim, 3)]
    assert model.aggregator.linear_map() is None
    _randomise(model)
    images = torch.rand(4, 3, model.image_size, model.image_size)
    with torch.no_grad():
        output = model(images)
        feature = model.image_features(images)[0]
    expected = F.normalize(feature, dim=-1) @ model.aggregator.feature_map()
    torch.testing.assert_close(output.logits, expected, rtol=1e-5, atol=1e-5)
    # "text": it starts as the template's zero-shot head (the texts' logits)
    texts = MethodOptions(probe_init="text")
    probe = build_reprogrammer("linear-probe", backbone, CLASSES, options=texts)
    with torch.no_grad():
        started = probe(images)
    torch.testing.assert_close(started.logits, started.scores.mean(-1), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="probe_init"):
        LinearProbe(3, "ones")


def test_parameter_counts_are_the_papers():
    """C = 100, m = 20, 224 px (the papers' Aircraft setting), counted on the parts' modules."""
    count = {name: get_recipe(name).parameter_count() for name in list_methods()}
    total = {name: c["prompt"] + c["head"] for name, c in count.items()}
    assert total["vp"] == 69_840
    assert total["ar"] == total["attrvr"] == total["dvp-one"] == 39_936
    assert total["dvp-cse"] == total["dvp-cls"] == 119_808
    assert total["rvp"] == 51_936
    assert count["rvp"]["head"] == 100 * 20 + 100 * 100
    assert total["rvp-no-p"] == 39_936 + 100 * 100 and total["rvp-no-e"] == 39_936 + 100 * 20
    assert total["rvp-no-prompt"] == 12_000
    assert count["attribute-lp"]["head"] == 100 * 20 * 100
    assert count["linear-probe"]["head"] == 512 * 100
    assert count["dvp-cse-rvp"] == {"prompt": 119_808, "head": 100 * 60 + 100 * 100}
    assert total["zero-shot"] == 0


def test_methods_command_shows_the_heads_and_their_parameters(capsys):
    assert cli("methods") == 0
    printed = capsys.readouterr().out
    assert "padding · attributes · single · rvp-head" in printed
    assert "padding · causes · by-file · rvp-head" in printed
    assert "zero-padding · attributes · single · rvp-head" in printed
    assert "parameters: 51,936 (prompt 39,936 + head 12,000)" in printed


def test_the_no_prompt_ablation_zero_pads_and_trains_nothing_but_the_head(backbone):
    model = _rvp(backbone, "rvp-no-prompt")
    assert model.prompt_parameters() == [] and model.prompts.trainable_parameters == 0
    images = torch.rand(2, 3, model.image_size, model.image_size)
    prompted = model.prompts(images)[0]
    frame = (backbone.input_size - model.image_size) // 2
    mean = torch.tensor(backbone.mean).view(3, 1, 1)
    std = torch.tensor(backbone.std).view(3, 1, 1)
    top = prompted[:, :, :frame]
    torch.testing.assert_close(top, (-mean / std).unsqueeze(0).expand_as(top))
    torch.testing.assert_close(prompted[:, :, frame:-frame, frame:-frame], (images - mean) / std)


# -- training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("rvp") / "data")


@pytest.mark.parametrize("method", ["rvp", "rvp-no-prompt", "linear-probe", "dvp-cse-rvp"])
def test_trained_heads_train_save_and_load(tmp_path, dataset, method):
    results = fit(quick_config(dataset, method, epochs=3), tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run")
    run = load_run(tmp_path / "run")  # what explain / predict / eval load
    head = {k: v for k, v in checkpoint["state"].items() if k.startswith("aggregator.")}
    assert head and all(float(v.abs().max()) > 0 for v in head.values())  # trained from 0
    assert results["head_parameters"] == sum(v.numel() for v in head.values())
    assert results["trainable_parameters"] == run.model.trainable_parameters
    assert results["trainable_parameters"] == (
        run.model.prompts.trainable_parameters + results["head_parameters"]
    )
    assert checkpoint["head_optimizer"]["state"]  # Adam's moments
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and not rows[0]["estimate_only"]
    head_lrs = [r["head_lr"] for r in rows]
    assert 1e-3 > head_lrs[0] > head_lrs[1] > head_lrs[2] >= 0  # the prompts' cosine
    if method != "rvp-no-prompt":
        assert [r["lr"] / 40 for r in rows] == pytest.approx([lr / 1e-3 for lr in head_lrs])
    prompt = checkpoint["state"]["prompts.theta"]
    assert (prompt.numel() > 0) == (method != "rvp-no-prompt")
    if prompt.numel():
        assert float(prompt.abs().max()) > 0
    if method == "rvp":
        assert results["head_parameters"] == 3 * 5 + 3 * 3  # C·M + C², m = 5
    for key, value in head.items():
        torch.testing.assert_close(run.model.state_dict()[key], value)
    image = next((dataset / "test" / "red disc").glob("*.png"))
    assert cli("predict", "--checkpoint", str(tmp_path / "run"), str(image)) == 0
    if method in ("rvp", "linear-probe"):  # the report loads and renders such runs
        report = tmp_path / "report"
        assert cli("explain", str(tmp_path / "run"), "--out", str(report), "--quiet") == 0
        assert (report / "index.html").is_file()


def test_head_optimiser_options(tmp_path, dataset):
    config = quick_config(dataset, "rvp", head_optimizer="sgd", head_schedule="constant")
    fit(config, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["head_scheduler"] is None
    assert "momentum_buffer" in next(iter(checkpoint["head_optimizer"]["state"].values()))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["head_lr"] for r in rows] == [1e-3, 1e-3]
    with pytest.raises(ReprogramError, match="head_optimizer must be adam or sgd"):
        fit(quick_config(dataset, "rvp", head_optimizer="lbfgs"), tmp_path / "bad")


def test_rvp_without_attribute_descriptions_names_the_missing_file(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", counts=(("train", 2), ("val", 1), ("test", 1)))
    (data / "descriptions" / "des.json").unlink()
    for method in ("dvp-cls", "rvp"):
        args = ["train", "--method", method, "--dataset", f"folder:{data}", "--quiet"]
        args += ["--backbone", "random:tiny", "--shots", "2", "--out", str(tmp_path / method)]
        assert cli(*args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "des.json" in err[0] and f"'{method}'" in err[0], err


def test_rvp_on_a_coop_dataset_with_the_packaged_descriptions(tmp_path):
    from test_packaged import make_dtd, save_random_weights

    data = make_dtd(tmp_path / "data")
    weights = save_random_weights("tiny", tmp_path / "tiny.pt")
    out = tmp_path / "run"
    args = ["train", "--method", "rvp", "--dataset", "dtd", "--root", str(data)]
    args += ["--backbone", "tiny", "--weights", str(weights), "--out", str(out), "--quiet"]
    args += ["--epochs", "1", "--shots", "2", "--set", "allow_small_classes=true"]
    assert cli(*args) == 0
    results = json.loads((out / "results.json").read_text())
    assert [d["name"] for d in results["descriptions"]] == ["packaged:attributes/dtd_des.json"]
    assert results["prompts"] == 1
    assert results["head_parameters"] == 47 * 20 + 47 * 47  # m = 20 over dtd's 47 classes
    assert results["trainable_parameters"] == results["head_parameters"] + 3 * (56**2 - 48**2)


def test_rvp_on_the_toy_world(tmp_path):
    from reprogram.toy import ARCH, pretrained_weights_path
    from reprogram.toy.tasks import make_task

    task = make_task(
        "digits",
        tmp_path / "digits",
        image_size=32,
        seed=0,
        shots=4,
        val_shots=2,
        test_per_class=3,
        overwrite=True,
    )
    out = tmp_path / "run"
    args = ["train", "--method", "rvp", "--dataset", f"folder:{task}", "--backbone", ARCH]
    args += ["--weights", str(pretrained_weights_path()), "--epochs", "2", "--shots", "4"]
    args += ["--batch-size", "8", "--out", str(out), "--quiet", "--device", "cpu"]
    assert cli(*args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["head_parameters"] == 10 * 20 + 10 * 10
    assert results["test_count"] == 30


def _train_args(dataset: Path, out: Path) -> list[str]:
    return [
        "train", "--method", "rvp", "--dataset", f"folder:{dataset}", "--backbone",
        "random:tiny", "--epochs", "8", "--batch-size", "2", "--shots", "4", "--seed", "3",
        "--set", "m=5",
        "--set", "deterministic=true", "--device", "cpu", "--out", str(out), "--quiet",
    ]  # fmt: skip


@pytest.mark.slow
def test_rvp_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path, dataset):
    """Prompt, P, E (and Adam's state through them) after kill + --resume equal a straight run."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    assert cli(*_train_args(dataset, straight)) == 0
    child = fork(lambda: cli(*_train_args(dataset, killed)))
    kill_when(child, lambda: epochs_checkpointed(killed, 2))
    assert 0 < load_checkpoint(killed)["epoch"] < 8
    assert cli(*_train_args(dataset, killed), "--resume") == 0
    assert_same_run(killed, straight, epochs=8)
    state = load_checkpoint(killed)["state"]
    assert {"prompts.theta", "aggregator.P", "aggregator.E"} <= set(state)


@pytest.mark.slow
def test_two_processes_train_the_head_like_one(tmp_path):
    """torchrun's data parallelism (2 gloo processes, a ragged last batch that leaves one
    process nothing): the head's gradients are summed like the prompt's."""
    import torch.distributed as dist
    from helpers import fork_world

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is needed")
    data = make_folder_dataset(tmp_path / "data", counts=(("train", 5), ("val", 2), ("test", 3)))
    settings = dict(epochs=3, batch_size=7, shots=0, device="cpu", deterministic=True)
    fit(quick_config(data, "rvp", **settings), tmp_path / "single")
    args = ["train", "--method", "rvp", "--dataset", f"folder:{data}", "--backbone"]
    args += ["random:tiny", "--epochs", "3", "--batch-size", "7", "--shots", "0", "--quiet"]
    args += ["--set", "m=5", "--set", "deterministic=true", "--device", "cpu"]
    workers = fork_world(2, lambda: cli(*args, "--out", str(tmp_path / "multi")))
    assert exit_codes(workers) == [0, 0]
    a, b = (load_checkpoint(tmp_path / name)["state"] for name in ("single", "multi"))
    for key in ("prompts.theta", "aggregator.P", "aggregator.E"):
        assert float(a[key].abs().max()) > 0, key
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
