"""Backbones: every weight format round-trips through ``load_backbone`` to the same features.

A random ``tiny`` open_clip model is saved in each supported form; the loaded backbone must give
the original model's image and text features, be frozen and in eval mode, and have the same
weight fingerprint whatever the format.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import time
import warnings
from pathlib import Path

import pytest
import torch
from helpers import TINY_HF_CLIP, tiny_hf_clip_config
from torch import nn

from reprogram.backbones import Backbone, TextFeatureCache, load_backbone
from reprogram.backbones.openclip import (
    OpenClipBackbone,
    architecture_config,
    build_open_clip_model,
)
from reprogram.errors import ReprogramError

TEXTS = ["a photo of a cat.", "a blurry photo of a dog", "Ünïcode café, 2024!"]
TINY_RN = {  # a ResNet ("RN50"-style) CLIP small enough for CPU tests
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# -- helpers ------------------------------------------------------------------------------------
def random_model(config: dict, quick_gelu: bool, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_open_clip_model(config, quick_gelu)
        with torch.no_grad():  # a logit scale other than the init value, so that it is checked
            model.logit_scale.fill_(3.0)
    return model.eval()


def same_weights(model: nn.Module, config: dict, quick_gelu: bool) -> nn.Module:
    twin = build_open_clip_model(config, quick_gelu)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def reference_features(model: nn.Module, pixels: torch.Tensor, context_length: int = 77):
    from open_clip.tokenizer import SimpleTokenizer

    with torch.no_grad():
        image = model.encode_image(pixels)
        text = model.encode_text(SimpleTokenizer(context_length=context_length)(TEXTS))
    return image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)


def features(backbone: Backbone, pixels: torch.Tensor, cache_dir: Path):
    backbone.text_cache = TextFeatureCache(cache_dir)  # a fresh cache: really encode the texts
    with torch.no_grad():
        image = backbone.encode_image(pixels)
    return image, backbone.encode_text(TEXTS)


def openai_state(model: nn.Module, image_size: int) -> dict[str, torch.Tensor]:
    """open_clip's CLIP keys are OpenAI's; OpenAI's files add three marker entries."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["input_resolution"] = torch.tensor(image_size)
    state["context_length"] = torch.tensor(77)
    state["vocab_size"] = torch.tensor(49408)
    return state


def torchscript_archive(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A TorchScript archive whose ``state_dict()`` is ``state`` (as OpenAI's ``.pt`` files)."""
    root = nn.Module()
    for name, tensor in state.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, tensor.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(root), str(path))
    return path


def assert_frozen(backbone: Backbone) -> None:
    params = list(backbone.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not backbone.training
    backbone.train()  # asking for training mode keeps it in eval mode
    assert not any(m.training for m in backbone.modules())


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model (GELU) and its QuickGELU twin with the same weights, saved in every form."""
    config = architecture_config("tiny")
    model = random_model(config, quick_gelu=False)
    quick = same_weights(model, config, quick_gelu=True)
    folder = tmp_path_factory.mktemp("weights")
    state = model.state_dict()
    size = config["vision_cfg"]["image_size"]

    from safetensors.torch import save_file

    files = {}
    torch.save(state, folder / "tiny.pt")
    files["open_clip .pt"] = folder / "tiny.pt"
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    files["open_clip .bin"] = folder / "open_clip_pytorch_model.bin"
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "tiny.safetensors"))
    files[".safetensors"] = folder / "tiny.safetensors"
    torch.save(
        {"epoch": 7, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}},
        folder / "epoch_7.pt",
    )
    files["training checkpoint"] = folder / "epoch_7.pt"
    torch.save(openai_state(model, size), folder / "openai_state.pt")
    files["OpenAI state dict"] = folder / "openai_state.pt"
    files["OpenAI TorchScript"] = torchscript_archive(
        openai_state(model, size), folder / "ViT-jit.pt"
    )

    local = folder / "local-dir"
    local.mkdir()
    (local / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": config,
                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            }
        )
    )
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(local / "open_clip_model.safetensors")
    )

    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return {
        "config": config,
        "model": model,
        "quick": quick,
        "files": files,
        "local": local,
        "pixels": pixels,
        "gelu_ref": reference_features(model, pixels),
        "quick_ref": reference_features(quick, pixels),
        "folder": folder,
    }


# -- formats ------------------------------------------------------------------------------------
OPEN_CLIP_FORMATS = ["open_clip .pt", "open_clip .bin", ".safetensors", "training checkpoint"]
OPENAI_FORMATS = ["OpenAI state dict", "OpenAI TorchScript"]


@pytest.mark.numeric
@pytest.mark.parametrize("form", OPEN_CLIP_FORMATS + OPENAI_FORMATS)
def test_weight_file_round_trip(tiny, form, tmp_path):
    backbone = load_backbone("tiny", tiny["files"][form])
    image, text = features(backbone, tiny["pixels"], tmp_path)
    # OpenAI's weights are recognised and get QuickGELU; open_clip files keep the config's GELU
    expected = tiny["quick_ref"] if form in OPENAI_FORMATS else tiny["gelu_ref"]
    assert backbone.quick_gelu == (form in OPENAI_FORMATS)
    torch.testing.assert_close(image, expected[0])
    torch.testing.assert_close(text, expected[1])
    assert_frozen(backbone)
    assert backbone.input_size == 56
    assert backbone.embed_dim == 64
    assert backbone.logit_scale == pytest.approx(float(torch.tensor(3.0).exp()))
    assert backbone.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert backbone.describe()["fingerprint"] == backbone.fingerprint


def test_fingerprint_equal_across_formats(tiny):
    prints = {form: load_backbone("tiny", path).fingerprint for form, path in tiny["files"].items()}
    prints["local-dir"] = load_backbone(f"local-dir:{tiny['local']}").fingerprint
    assert len(set(prints.values())) == 1, prints
    assert len(next(iter(prints.values()))) == 16
    other = random_model(tiny["config"], quick_gelu=False, seed=1)
    torch.save(other.state_dict(), tiny["folder"] / "other.pt")
    assert load_backbone("tiny", tiny["folder"] / "other.pt").fingerprint not in prints.values()


def test_local_dir_round_trip(tiny, tmp_path):
    for spec, weights in ((f"local-dir:{tiny['local']}", None), ("tiny", tiny["local"])):
        backbone = load_backbone(spec, weights)
        image, text = features(backbone, tiny["pixels"], tmp_path / spec.replace(":", "_"))
        torch.testing.assert_close(image, tiny["gelu_ref"][0])
        torch.testing.assert_close(text, tiny["gelu_ref"][1])
        assert backbone.mean == (0.5, 0.5, 0.5) and backbone.std == (0.25, 0.25, 0.25)
        assert_frozen(backbone)


def test_encode_image_passes_gradients_to_pixels(tiny):
    backbone = load_backbone("tiny", tiny["files"][".safetensors"])
    pixels = tiny["pixels"].clone().requires_grad_(True)
    backbone.encode_image(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


# -- QuickGELU ----------------------------------------------------------------------------------
def test_quick_gelu_forced_off_changes_features(tiny, tmp_path):
    """The auto-detection matters: without QuickGELU, OpenAI's weights give other features."""
    forced = load_backbone("tiny", tiny["files"]["OpenAI state dict"], quick_gelu=False)
    assert not forced.quick_gelu
    image, text = features(forced, tiny["pixels"], tmp_path)
    torch.testing.assert_close(image, tiny["gelu_ref"][0])
    assert not torch.allclose(image, tiny["quick_ref"][0], atol=1e-4)
    assert not torch.allclose(text, tiny["quick_ref"][1], atol=1e-4)


def test_quick_gelu_explicit_and_from_configs(tiny, tmp_path):
    # asked for explicitly, on a plain open_clip file
    forced = load_backbone("tiny", tiny["files"]["open_clip .pt"], quick_gelu=True)
    assert forced.quick_gelu
    torch.testing.assert_close(features(forced, tiny["pixels"], tmp_path)[0], tiny["quick_ref"][0])
    # an open_clip folder whose config asks for it (e.g. a hub snapshot of OpenAI weights)
    folder = tmp_path / "quick-dir"
    folder.mkdir()
    config = {**tiny["config"], "quick_gelu": True}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    torch.save(tiny["model"].state_dict(), folder / "open_clip_pytorch_model.bin")
    for backbone in (
        load_backbone(f"local-dir:{folder}"),
        # the bare file, with that config beside it
        load_backbone("tiny", folder / "open_clip_pytorch_model.bin"),
    ):
        assert backbone.quick_gelu
        image, text = features(backbone, tiny["pixels"], tmp_path / "c")
        torch.testing.assert_close(image, tiny["quick_ref"][0])
        torch.testing.assert_close(text, tiny["quick_ref"][1])


def test_quick_gelu_resnet_openai_weights(tmp_path):
    """A ResNet CLIP (as RN50/RN101) with OpenAI-marked weights in a local-dir folder."""
    quick = random_model(TINY_RN, quick_gelu=True, seed=2)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = reference_features(quick, pixels)
    from safetensors.torch import save_file

    folder = tmp_path / "rn"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_RN}))
    save_file(openai_state(quick, 64), str(folder / "open_clip_model.safetensors"))
    backbone = load_backbone(f"local-dir:{folder}")
    assert backbone.quick_gelu and backbone.input_size == 64 and backbone.embed_dim == 32
    image, text = features(backbone, pixels, tmp_path / "cache")
    torch.testing.assert_close(image, expected[0])
    torch.testing.assert_close(text, expected[1])
    assert_frozen(backbone)
    forced = load_backbone(f"local-dir:{folder}", quick_gelu=False)
    assert not torch.allclose(features(forced, pixels, tmp_path / "c2")[1], expected[1], atol=1e-4)


# -- Hugging Face -------------------------------------------------------------------------------
def _offline_clip_tokenizer(folder: Path):
    """A CLIPTokenizer built from open_clip's packaged BPE file, as OpenAI's tokenizer builds it."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as handle:
        merges = handle.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))


@contextlib.contextmanager
def _no_network():
    """Every socket connection refused: a load that tries a hub fails instead of waiting."""
    import socket

    def refuse(self, address, *args):
        raise AssertionError(f"a network connection was tried: {address}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        yield


def test_hugging_face_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from open_clip.tokenizer import SimpleTokenizer

    folder = tmp_path / "hf-clip"
    folder.mkdir()
    tokenizer = _offline_clip_tokenizer(folder)
    # the offline tokenizer is OpenAI's: same ids as open_clip's tokenizer
    simple = SimpleTokenizer()
    for text in TEXTS:
        ids = [simple.sot_token_id] + simple.encode(text) + [simple.eot_token_id]
        assert tokenizer(text)["input_ids"] == ids

    torch.manual_seed(4)
    model = transformers.CLIPModel(tiny_hf_clip_config(**TINY_HF_CLIP)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.4, 0.4, 0.4], "image_std": [0.2, 0.3, 0.2]})
    )

    def tensor(output):
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        image_ref = tensor(model.get_image_features(pixel_values=pixels))
        text_ref = tensor(
            model.get_text_features(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
        )
    image_ref = image_ref / image_ref.norm(dim=-1, keepdim=True)
    text_ref = text_ref / text_ref.norm(dim=-1, keepdim=True)

    prints = set()
    environment = dict(os.environ)
    for spec, weights in ((f"hf:{folder}", None), ("ViT-B-32", folder)):
        with _no_network():
            backbone = load_backbone(spec, weights)
        assert dict(os.environ) == environment  # offline only while it loads
        image, text = features(backbone, pixels, tmp_path / f"cache{len(prints)}")
        torch.testing.assert_close(image, image_ref)
        torch.testing.assert_close(text, text_ref)
        assert backbone.input_size == 56 and backbone.embed_dim == 24
        assert backbone.mean == pytest.approx((0.4, 0.4, 0.4))
        assert backbone.std == pytest.approx((0.2, 0.3, 0.2))
        assert_frozen(backbone)
        prints.add(backbone.fingerprint)
    assert len(prints) == 1


# -- random weights and architectures -----------------------------------------------------------
PAPER_SIZES = {  # (input size, feature size, parameters) of OpenAI's released models
    "RN50": (224, 1024, 102_007_137),
    "RN101": (224, 512, 119_688_033),
    "ViT-B/16": (224, 512, 149_620_737),
    "ViT-B/32": (224, 512, 151_277_313),
    "ViT-L/14": (224, 768, 427_616_513),
    "ViT-L/14-336": (336, 768, 427_944_193),
}


@pytest.mark.parametrize("arch", list(PAPER_SIZES))
def test_paper_architectures(arch):
    """``random:<arch>`` builds each paper architecture (on the meta device: shapes, no memory)."""
    with torch.device("meta"):
        backbone = load_backbone(f"random:{arch}", device="meta")
    size, dim, count = PAPER_SIZES[arch]
    assert (backbone.input_size, backbone.embed_dim) == (size, dim)
    assert sum(p.numel() for p in backbone.parameters()) == count
    assert_frozen(backbone)
    out = backbone.encode_image(torch.zeros(2, 3, size, size, device="meta"))
    assert out.shape == (2, dim)


@pytest.mark.numeric
def test_random_backbones_are_deterministic():
    first, second = load_backbone("random:tiny"), load_backbone("random:tiny")
    assert first.fingerprint == second.fingerprint
    assert_frozen(first)
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(first.encode_image(pixels), second.encode_image(pixels))


def test_random_vit_b_32_runs():
    """The smoke-run backbone of the CLI (``--backbone random:ViT-B-32``), really instantiated."""
    backbone = load_backbone("random:ViT-B/32")
    assert backbone.spec.arch == "random:ViT-B/32" and backbone.input_size == 224
    assert_frozen(backbone)
    with torch.no_grad():
        out = backbone.encode_image(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 512)
    assert backbone.encode_text(["a photo of a dog."]).shape == (1, 512)


# -- errors -------------------------------------------------------------------------------------
def test_pretrained_tag_fails_fast_with_guidance():
    start = time.perf_counter()
    with pytest.raises(ReprogramError) as err:
        load_backbone("ViT-B-32", "openai")
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "local file" in message and "--weights" in message and "random:ViT-B-32" in message
    for spec, weights in (("ViT-B-16", "laion2b_s34b_b88k"), ("hf-hub:timm/vit_base", None)):
        start = time.perf_counter()
        with pytest.raises(ReprogramError, match="download"):
            load_backbone(spec, weights)
        assert time.perf_counter() - start < 2.0
    with pytest.raises(ReprogramError, match="never downloaded"):
        load_backbone("ViT-B-32")


def test_wrong_architecture_names_architecture_and_keys(tiny):
    with pytest.raises(ReprogramError) as err:
        load_backbone("toy", tiny["files"]["open_clip .pt"])
    message = str(err.value)
    assert "'toy'" in message and "tiny.pt" in message
    assert "missing keys" in message and "transformer.resblocks.2" in message
    assert "another shape" in message
    with pytest.raises(ReprogramError, match="'RN50'.*unexpected keys"):
        load_backbone("RN50", tiny["files"][".safetensors"])


def test_other_input_size_is_another_architecture(tiny, tmp_path):
    """As ViT-L-14 vs ViT-L-14-336: no silent interpolation of the position embeddings."""
    folder = tmp_path / "tiny-64"
    folder.mkdir()
    config = json.loads(json.dumps(tiny["config"]))
    config["vision_cfg"]["image_size"] = 64
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    torch.save(tiny["model"].state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(ReprogramError) as err:
        load_backbone(f"local-dir:{folder}")
    assert "visual.positional_embedding: file (50, 64) vs model (65, 64)" in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ReprogramError, match="not found"):
        load_backbone("tiny", tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(random.Random(0).randbytes(256))  # the same garbage every run
    with pytest.raises(ReprogramError, match=r"garbage\.pt: cannot read weights"):
        load_backbone("tiny", garbage)
    bad_st = tmp_path / "garbage.safetensors"
    bad_st.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ReprogramError, match="cannot read weights"):
        load_backbone("tiny", bad_st)
    torch.save({"epoch": 3}, tmp_path / "no-tensors.pt")
    with pytest.raises(ReprogramError, match="not a CLIP state dict"):
        load_backbone("tiny", tmp_path / "no-tensors.pt")
    with pytest.raises(ReprogramError, match="unknown architecture 'ViT-Q-99'"):
        load_backbone("ViT-Q-99", garbage)
    with pytest.raises(ReprogramError, match="takes no weights"):
        load_backbone("random:tiny", garbage)
    with pytest.raises(ReprogramError, match="neither an open_clip folder"):
        load_backbone("tiny", tmp_path)
    with pytest.raises(ReprogramError, match="folder not found"):
        load_backbone(f"local-dir:{tmp_path / 'nope'}")


# -- text-feature cache -------------------------------------------------------------------------
def test_text_cache_hits_and_misses(tiny, tmp_path, monkeypatch):
    calls = []
    original = OpenClipBackbone._encode_text_batch

    def counting(self, texts):
        calls.append(list(texts))
        return original(self, texts)

    monkeypatch.setattr(OpenClipBackbone, "_encode_text_batch", counting)
    cache = TextFeatureCache(tmp_path / "cache")

    def load(*args, **kwargs):
        backbone = load_backbone(*args, **kwargs)
        backbone.text_cache = cache
        return backbone

    first = load("tiny", tiny["files"]["open_clip .pt"])
    a = first.encode_text(TEXTS, batch_size=2)
    assert len(calls) == 2 and (cache.hits, cache.misses) == (0, 1)  # two batches of texts
    b = first.encode_text(TEXTS)
    assert len(calls) == 2 and cache.hits == 1
    torch.testing.assert_close(a, b)
    # the same weights from another file (same fingerprint) read the same cache entry
    load("tiny", tiny["files"][".safetensors"]).encode_text(TEXTS)
    assert len(calls) == 2 and cache.hits == 2
    # another list, another order, other weights, other activation: all recomputed
    first.encode_text(TEXTS[:2])
    first.encode_text(list(reversed(TEXTS)))
    assert len(calls) == 4 and cache.misses == 3
    torch.save(random_model(tiny["config"], False, seed=9).state_dict(), tmp_path / "other.pt")
    load("tiny", tmp_path / "other.pt").encode_text(TEXTS)
    assert len(calls) == 5 and cache.misses == 4
    quick = load("tiny", tiny["files"]["open_clip .pt"], quick_gelu=True)
    assert quick.fingerprint == first.fingerprint and quick.text_cache_key != first.text_cache_key
    torch.testing.assert_close(quick.encode_text(TEXTS), tiny["quick_ref"][1])
    assert len(calls) == 6 and cache.misses == 5
    assert first.encode_text([]).shape == (0, 64)


def test_text_cache_defaults_to_reprogram_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path))
    backbone = load_backbone("random:tiny")
    backbone.text_cache = TextFeatureCache()
    backbone.encode_text(["a cat"])
    assert list((tmp_path / "text-features").rglob("*.pt"))


# -- local-dir preprocess_cfg and OpenAI markers stored as ints -----------------------------------
def _local_dir(tmp_path: Path, tiny, preprocess: dict | None, state=None) -> Path:
    folder = tmp_path / "local"
    folder.mkdir(exist_ok=True)
    config = {"model_cfg": tiny["config"]}
    if preprocess is not None:
        config["preprocess_cfg"] = preprocess
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(state if state is not None else tiny["model"].state_dict(), folder / "model.pt")
    return folder


def test_local_dir_honours_supported_preprocess(tiny, tmp_path):
    size = tiny["config"]["vision_cfg"]["image_size"]
    preprocess = {
        "size": size,
        "mode": "RGB",
        "mean": [0.1, 0.2, 0.3],
        "std": [0.4, 0.5, 0.6],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    backbone = load_backbone(f"local-dir:{_local_dir(tmp_path, tiny, preprocess)}")
    assert backbone.mean == (0.1, 0.2, 0.3) and backbone.std == (0.4, 0.5, 0.6)
    assert backbone.describe()["mean"] == [0.1, 0.2, 0.3]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("resize_mode", "squash"),
        ("resize_mode", "longest"),
        ("interpolation", "bilinear"),
        ("mode", "L"),
        ("size", 999),
        ("mean", [0.5, 0.5]),
        ("std", [0.5, 0.0, 0.5]),
    ],
)
def test_local_dir_refuses_unsupported_preprocess(tiny, tmp_path, key, value):
    folder = _local_dir(tmp_path, tiny, {key: value})
    with pytest.raises(ReprogramError, match=f"preprocess_cfg {key}"):
        load_backbone(f"local-dir:{folder}")


def test_openai_markers_as_python_ints_are_recognised(tiny, tmp_path):
    state = {k: v.clone() for k, v in tiny["model"].state_dict().items()}
    size = tiny["config"]["vision_cfg"]["image_size"]
    state.update({"input_resolution": size, "context_length": 77, "vocab_size": 49408})
    torch.save(state, tmp_path / "openai_ints.pt")
    for backbone in (
        load_backbone("tiny", tmp_path / "openai_ints.pt"),
        load_backbone(f"local-dir:{_local_dir(tmp_path, tiny, None, state)}"),
    ):
        assert backbone.quick_gelu
        image, text = features(backbone, tiny["pixels"], tmp_path / "cache")
        torch.testing.assert_close(image, tiny["quick_ref"][0])
        torch.testing.assert_close(text, tiny["quick_ref"][1])
