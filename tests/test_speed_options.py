"""Speed options: torch.compile, gradient checkpointing, frozen weights, fused attention,
no host synchronisation in the training step."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import make_folder_dataset, quick_config

from reprogram.engine.setup import prepare


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("speed") / "data")


def _model(dataset, method: str = "dvp-cse", device: str = "cpu", **overrides):
    model = prepare(quick_config(dataset, method, device=device, **overrides)).model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.prompts.theta.copy_(torch.randn(model.prompts.theta.shape, generator=generator))
    return model


def _batch(model, count: int = 3):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count, 3, model.image_size, model.image_size, generator=generator)
    return images, torch.arange(count) % model.bank.num_classes


def _logits_and_grad(model, images, labels):
    model.zero_grad(set_to_none=True)
    logits = model(images).logits
    F.cross_entropy(logits.float(), labels, reduction="sum").backward()
    return logits.detach(), model.prompts.theta.grad.detach().clone()


def _compile_usable() -> bool:
    try:
        import torch._dynamo

        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:
        return False


needs_compile = pytest.mark.skipif(
    not _compile_usable(), reason="torch.compile is not supported here"
)


def _logits_grad_and_saved(model, images, labels):
    """Logits, prompt gradient, and how many tensors the forward pass kept for the backward."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(images).logits
    F.cross_entropy(logits.float(), labels, reduction="sum").backward()
    return logits.detach(), model.prompts.theta.grad.detach().clone(), sum(saved)


@pytest.mark.numeric
def test_grad_checkpointing_gives_the_same_gradients(dataset):
    model = _model(dataset)
    images, labels = _batch(model)
    logits, grad, kept = _logits_grad_and_saved(model, images, labels)
    model.backbone.set_grad_checkpointing(True)
    block = model.backbone.image_blocks()[0]
    forward = block.forward
    calls = []
    block.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    try:
        logits_ckpt, grad_ckpt, kept_ckpt = _logits_grad_and_saved(model, images, labels)
    finally:
        del block.forward
        model.backbone.set_grad_checkpointing(False)
    assert len(calls) == 2  # the block ran again in the backward pass
    assert kept_ckpt < kept / 2  # and the forward pass kept far fewer activations
    torch.testing.assert_close(logits_ckpt, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_ckpt, grad, rtol=1e-5, atol=1e-9)


def test_grad_checkpointing_config_reaches_the_backbone(dataset):
    model = _model(dataset, grad_checkpointing=True)
    assert model.backbone.model.visual.transformer.grad_checkpointing


def test_no_backbone_parameter_receives_a_gradient(dataset):
    """Frozen weights, and the backward pass computes input gradients only (by its FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _model(dataset)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    images, labels = _batch(model)
    with FlopCounterMode(display=False) as forward_counter:
        logits = model(images).logits
    loss = F.cross_entropy(logits, labels, reduction="sum")
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.prompts.theta.grad is not None and model.prompts.theta.grad.abs().sum() > 0
    forward = {str(k): v for k, v in forward_counter.get_flop_counts()["Global"].items()}
    backward = {str(k): v for k, v in backward_counter.get_flop_counts()["Global"].items()}
    linear = forward.get("aten.addmm", 0) + forward.get("aten.mm", 0)
    # a weight gradient would add a second matmul per linear layer (and a second conv)
    assert backward.get("aten.mm", 0) <= linear
    assert backward.get("aten.convolution_backward", 0) == forward.get("aten.convolution", 0)


def test_attention_goes_through_fused_sdpa(dataset, monkeypatch):
    """open_clip's blocks call F.scaled_dot_product_attention (through nn.MultiheadAttention)."""
    model = _model(dataset)
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    images, labels = _batch(model)
    _logits_and_grad(model, images, labels)
    assert len(calls) == len(model.backbone.image_blocks())


@needs_compile
@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_compile_gives_the_eager_logits_and_gradients(dataset, scope):
    model = _model(dataset)
    images, labels = _batch(model)
    logits, grad = _logits_and_grad(model, images, labels)
    model.enable_compile(scope=scope, backend="aot_eager")  # inductor: see the slow test below
    model.enable_compile(scope=scope, backend="aot_eager")  # a second call changes nothing
    compiled_logits, compiled_grad = _logits_and_grad(model, images, labels)
    torch.testing.assert_close(compiled_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled_grad, grad, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError):
        model.enable_compile(scope="everything")


@needs_compile
def test_training_with_compile_runs(dataset, tmp_path, monkeypatch):
    from reprogram.engine.train import fit

    real_compile = torch.compile
    backends = []

    def cheap_compile(fn=None, **options):  # the option's wiring, without inductor's compile time
        backends.append(options.get("backend", "inductor"))
        return real_compile(fn, **{**options, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", cheap_compile)
    results = fit(quick_config(dataset, "dvp-cse", device="cpu", compile=True), tmp_path / "run")
    assert backends  # compile=True reached torch.compile
    assert 0.0 <= results["test_accuracy"] <= 1.0


@needs_compile
@pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("REPROGRAM_TEST_INDUCTOR")),
    reason="inductor (what --compile uses on a GPU) is checked on a GPU; on a CPU its cold "
    "compile takes a minute (REPROGRAM_TEST_INDUCTOR=1 runs it there)",
)
def test_compile_with_inductor_matches_eager(dataset, monkeypatch):
    """On a GPU when there is one (--compile's use; fp32 convolutions, no TF32), else on the CPU
    when asked."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = _model(dataset, device=device)
    images, labels = (t.to(device) for t in _batch(model))
    logits, grad = _logits_and_grad(model, images, labels)
    model.enable_compile()
    compiled_logits, compiled_grad = _logits_and_grad(model, images, labels)
    torch.testing.assert_close(compiled_logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled_grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation is a GPU matter")
def test_training_steps_do_not_synchronise_with_the_host(dataset):
    """The number of synchronising calls of an epoch does not grow with its number of steps."""
    from reprogram.engine.state import RunState
    from reprogram.engine.train import TrainData, cosine_schedule, train_one_epoch

    config = quick_config(dataset, "dvp-cse", device="cuda", batch_size=4)
    model = prepare(config).model
    device = torch.device("cuda")
    size = model.image_size
    optimizer = torch.optim.SGD(model.prompt_parameters(), lr=1.0, momentum=0.9)
    scheduler = cosine_schedule(optimizer, 100)

    def syncs(steps: int) -> int:
        count = steps * config.optim.batch_size
        pixels = torch.randint(
            0, 256, (count, 3, size + 8, size + 8), dtype=torch.uint8, device=device
        )
        data = TrainData(
            pixels,
            torch.full((count, 2), size + 8),
            torch.arange(count, device=device) % 3,
            True,
            size,
            [],
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_one_epoch(model, data, RunState(optimizer, scheduler), config, torch.bfloat16)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(2)  # warm-up (lazy initialisations may synchronise once)
    assert syncs(6) == syncs(2)
