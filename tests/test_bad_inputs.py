"""Bad input files: high-bit-depth images, broken weights files, incomplete Hugging Face folders,
CSV label typos without classnames.txt."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_HF_CLIP, make_folder_dataset, quick_config, tiny_hf_clip_config
from PIL import Image

from reprogram.backbones import load_backbone
from reprogram.data import few_shot, load_dataset
from reprogram.data.images import (
    center_crop,
    decode_center,
    decode_short_side,
    load_rgb,
    resize_short_side,
    to_uint8_chw,
)
from reprogram.data.readers import Sample
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError


# -- 16-bit and float images ------------------------------------------------------------------
def _gradient(height: int = 24, width: int = 40) -> np.ndarray:
    return np.linspace(0.0, 1.0, height * width).reshape(height, width)


def _rgb_of(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def test_a_16_bit_png_is_rescaled_by_257(tmp_path):
    values = np.round(_gradient() * 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode.startswith("I;16")
    decoded = np.asarray(load_rgb(str(tmp_path / "g.png")))
    expected = np.round(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(decoded, _rgb_of(expected))
    assert decoded.min() == 0 and decoded.max() == 255 and len(np.unique(decoded)) > 200


def test_float_and_32_bit_tiffs_are_rescaled(tmp_path):
    unit = _gradient().astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(
        np.asarray(load_rgb(str(tmp_path / "unit.tif"))), _rgb_of(np.round(unit * 255))
    )
    wide = (unit * 4.0 - 1.0).astype(np.float32)  # -1..3: stretched from min to max
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    stretched = np.round((wide.astype(np.float64) + 1.0) * 255.0 / 4.0)
    np.testing.assert_array_equal(
        np.asarray(load_rgb(str(tmp_path / "wide.tif"))), _rgb_of(stretched)
    )
    integers = np.round(_gradient() * 65535).astype(np.int32)
    Image.fromarray(integers).save(tmp_path / "i32.tif")
    with Image.open(tmp_path / "i32.tif") as image:
        assert image.mode == "I"
    np.testing.assert_array_equal(
        np.asarray(load_rgb(str(tmp_path / "i32.tif"))), _rgb_of(np.round(integers / 257))
    )


def test_training_and_evaluation_decode_16_bit_images_alike(tmp_path):
    values = np.round(_gradient(30, 50) * 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    eight = Image.fromarray(_rgb_of(np.round(values / 257).astype(np.uint8)))
    samples = [Sample(str(tmp_path / "g.png"), 0)]
    center = decode_center(samples, 16, use_cache=False).pixels[0].numpy()
    np.testing.assert_array_equal(
        center, to_uint8_chw(center_crop(resize_short_side(eight, 16), 16))
    )
    short = decode_short_side(samples, 16).pixels[0].numpy()
    np.testing.assert_array_equal(short, to_uint8_chw(resize_short_side(eight, 16)))
    assert 0 < center.mean() < 255


# -- weights files ----------------------------------------------------------------------------
LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 598641023\n".format("0" * 64)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (LFS.encode(), r"is a git-LFS pointer, not the weights: run 'git lfs pull'"),
        (b"", "is empty, not a weights file"),
        (b"\x00garbage" * 100, "cannot read weights"),
        (pickle.dumps({"visual": object()}, protocol=2), "never loaded"),
    ],
)
@pytest.mark.parametrize("name", ["ViT.pt", "model.safetensors"])
def test_a_broken_weights_file_is_one_line_without_unsafe_advice(tmp_path, content, message, name):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ReprogramError) as caught:
        load_backbone("tiny", path)
    text = str(caught.value)
    if name.endswith(".safetensors") and message == "never loaded":
        message = "cannot read weights"  # safetensors never unpickles anything
    assert pytest.importorskip("re").search(message, text), text
    assert "weights_only" not in text and "\n" not in text


def test_no_source_file_suggests_weights_only_false():
    src = Path(__file__).resolve().parents[1] / "src" / "reprogram"
    offenders = [p for p in src.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []


# -- Hugging Face folders ---------------------------------------------------------------------
@pytest.fixture()
def hf_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "hf"
    transformers.CLIPModel(tiny_hf_clip_config(**TINY_HF_CLIP)).save_pretrained(folder)
    return folder


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("text_projection.weight"), r"1 missing keys \(e\.g\. text_projection"),
        (lambda s: s.update(extra=torch.zeros(2)), r"1 unexpected keys \(e\.g\. extra\)"),
        (
            lambda s: s.update({"visual_projection.weight": torch.zeros(3, 3)}),
            r"visual_projection\.weight: file \(3, 3\) vs model \(24, 32\)",
        ),
    ],
)
def test_a_hugging_face_folder_with_other_keys_is_refused(hf_folder, edit, message, capfd):
    _edit_weights(hf_folder, edit)
    with pytest.raises(ReprogramError, match=message) as caught:
        load_backbone(f"hf:{hf_folder}")
    assert "do not match its config.json" in str(caught.value)
    assert "LOAD REPORT" not in capfd.readouterr().err  # our line, not transformers' report


def test_a_hugging_face_folder_without_config_or_weights_says_so(hf_folder, capfd):
    weights = hf_folder / "model.safetensors"
    weights.write_text(LFS)
    with pytest.raises(ReprogramError, match="is a git-LFS pointer"):
        load_backbone(f"hf:{hf_folder}")
    weights.unlink()
    with pytest.raises(ReprogramError, match="no weights file"):
        load_backbone(f"hf:{hf_folder}")
    (hf_folder / "config.json").unlink()
    capfd.readouterr()
    with pytest.raises(ReprogramError, match="no config.json, so not a Hugging Face model folder"):
        load_backbone(f"hf:{hf_folder}")
    assert capfd.readouterr().err == ""  # said before transformers prints anything


# -- CSV label typos --------------------------------------------------------------------------
@pytest.fixture()
def typo_csv(tmp_path) -> Path:
    images = make_folder_dataset(tmp_path / "src", counts=(("train", 6), ("val", 2), ("test", 2)))
    rows = ["path,label,split"]
    for split in ("train", "val", "test"):
        for name, label in (("red disc", "cat"), ("green square", "dog")):
            for image in sorted((images / split / name).glob("*.png")):
                rows.append(f"{image},{label},{split}")
    rows.append(f"{images / 'train' / 'red disc' / '0.png'},dgo,train")  # the typo
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "d.csv"


def test_a_csv_label_typo_shows_in_the_class_list_and_is_refused(typo_csv, tmp_path):
    splits = load_dataset(f"csv:{typo_csv}")
    assert splits.classnames == ["cat", "dgo", "dog"]
    assert "3 classes taken from the label column" in splits.notes[0]
    assert "cat (10), dgo (1), dog (10)" in splits.notes[0]
    with pytest.raises(ReprogramError, match=r"'dgo' \(1\).*allow_small_classes=true"):
        few_shot(splits, 4, 1, allow_small=False)
    config = quick_config(typo_csv, "vp", epochs=1).updated(dataset=f"csv:{typo_csv}")
    with pytest.raises(ReprogramError, match=r"fewer training images than the 4 shots asked"):
        fit(config, tmp_path / "refused")
    assert not (tmp_path / "refused" / "results.json").exists()


def test_allow_small_classes_trains_and_records_the_real_shots(typo_csv, tmp_path):
    config = quick_config(typo_csv, "vp", epochs=1, allow_small_classes=True)
    config = config.updated(dataset=f"csv:{typo_csv}")
    results = fit(config, tmp_path / "run")
    assert results["train_shots_per_class"] == {"cat": 4, "dgo": 1, "dog": 4}
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["train_shots_per_class"] == {"cat": 4, "dgo": 1, "dog": 4}
    assert any("dgo (1)" in warning for warning in on_disk["warnings"])
