"""Packaged descriptions: the archive, file choice per method, the run record, describe output
found by auto-discovery, and the small things (toy without weights, --help, make clean)."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from helpers import cli
from PIL import Image

from reprogram.engine.setup import cause_names, default_description_files, is_template_file
from reprogram.errors import ReprogramError
from reprogram.model.methods import get_recipe
from reprogram.model.parts import ATTRIBUTES, CAUSES
from reprogram.text.describe.manifest import MANIFEST_NAME, OLD_MANIFEST_NAME, read_manifest
from reprogram.text.describe.templates import template_descriptions
from reprogram.text.packaged import (
    file_record,
    listing,
    materialize,
    packaged_bytes,
    packaged_files,
    summary_lines,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "descriptions"


# -- the archive --------------------------------------------------------------------------------
def test_archive_holds_every_published_set_and_the_notices():
    files = packaged_files()
    assert len(files) == 93  # 45 cause files + 24 attribute files + 4 sources x 6
    assert sum(1 for f in files if f.source) == 24
    assert {f.key for f in files if f.source} == {"dtd", "fgvc", "oxford_flowers"}
    assert sorted(f.number for f in listing("dtd")["dtd"] if f.number) == [1, 2, 3, 4, 5, 6, 7]
    for notice in ("LICENSE-upstream", "LICENSE-upstream-attrvr", "README.md"):
        assert b"MIT" in packaged_bytes(notice) or notice == "README.md"
        assert (REPO / "src/reprogram/assets/descriptions" / notice).is_file()
    archive = REPO / "src/reprogram/assets/descriptions/descriptions.tar.xz"
    assert archive.stat().st_size < 4_000_000


def test_pack_script_is_reproducible_and_keeps_bytes(tmp_path):
    script = REPO / "scripts" / "pack-descriptions.py"
    outs = [tmp_path / "a.tar.xz", tmp_path / "b.tar.xz"]
    for out in outs:
        subprocess.run(
            [sys.executable, str(script), str(FIXTURE), "--out", str(out)],
            check=True,
            capture_output=True,
        )
    assert outs[0].read_bytes() == outs[1].read_bytes()
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(outs[0].read_bytes()))) as tar:
        names = tar.getnames()
        member = tar.extractfile("causes/mini_cse_2.json")
        assert (
            member is not None
            and member.read() == (FIXTURE / "causes/mini_cse_2.json").read_bytes()
        )
    assert names[:3] == ["README.md", "LICENSE-upstream", "LICENSE-upstream-attrvr"]
    assert len(names) == 9


def _tar_xz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buffer.getvalue())


@pytest.fixture
def damaged_archive(tmp_path, monkeypatch):
    """Point the package at an archive file the test writes (the real one again afterwards)."""
    from reprogram.text import packaged

    path = tmp_path / "descriptions.tar.xz"
    monkeypatch.setattr(packaged, "_archive_file", lambda: path)
    packaged._members.cache_clear()
    yield path
    packaged._members.cache_clear()


@pytest.mark.parametrize("damage", ["truncated xz", "xz not a tar", "truncated json member"])
def test_a_damaged_archive_says_reinstall_in_one_line(damaged_archive, damage, capsys):
    real = (REPO / "src/reprogram/assets/descriptions/descriptions.tar.xz").read_bytes()
    damaged_archive.write_bytes(
        {
            "truncated xz": real[: len(real) // 2],
            "xz not a tar": lzma.compress(b"not a tar archive " * 64),
            "truncated json member": _tar_xz({"causes/dtd_cse_1.json": b'{"banded": ["a'}),
        }[damage]
    )
    capsys.readouterr()
    assert cli("descriptions", "list", "--dataset", "dtd") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: the packaged descriptions are damaged (")
    assert line.endswith("): reinstall")
    if damage == "truncated json member":
        assert "causes/dtd_cse_1.json is not valid JSON" in line
        with pytest.raises(ReprogramError, match="packaged descriptions are damaged"):
            materialize("packaged:causes/dtd_cse_1.json")


def test_materialized_file_has_the_packaged_bytes():
    path = materialize("packaged:causes/dtd_cse_1.json")
    assert path.read_bytes() == packaged_bytes("causes/dtd_cse_1.json")
    assert len(json.loads(path.read_text())) == 47
    assert materialize("packaged:causes/dtd_cse_1.json") == path  # extracted once
    with pytest.raises(ReprogramError, match="descriptions list"):
        packaged_bytes("causes/dtd_cse_9.json")


# -- which files a method uses ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("dvp-cse", ["causes/dtd_cse_1.json", "causes/dtd_cse_2.json", "causes/dtd_cse_3.json"]),
        ("dvp-cls", ["attributes/dtd_des.json"]),
        ("attrvr", ["attributes/dtd_des.json", "attributes/dtd_dist.json"]),
        ("zero-shot-desc", ["attributes/dtd_des.json"]),
        ("vp", []),
    ],
)
def test_published_dataset_defaults(method, expected):
    files = default_description_files(get_recipe(method), "dtd")
    assert files == [f"packaged:{name}" for name in expected]


def test_other_causes_and_sources():
    causes = CAUSES.packaged_specs("fgvc", [4, 2, 7])
    assert causes == [
        "packaged:causes/fgvc_csl_4.json",
        "packaged:causes/fgvc_cse_2.json",
        "packaged:causes/fgvc_csl_7.json",
    ]
    llama = default_description_files(get_recipe("attrvr"), "oxford_flowers", source="llama")
    assert llama == [
        "packaged:attributes-other-llms/llama/oxford_flowers_des.json",
        "packaged:attributes-other-llms/llama/oxford_flowers_dist.json",
    ]
    with pytest.raises(ReprogramError, match="exists for: dtd, fgvc, oxford_flowers"):
        ATTRIBUTES.packaged_specs("eurosat", [], "phi3")
    with pytest.raises(ReprogramError, match="packaged causes: 1, 2, 3"):
        CAUSES.packaged_specs("eurosat", [4])
    with pytest.raises(ReprogramError, match="unknown description source 'gpt5'"):
        ATTRIBUTES.packaged_specs("dtd", [], "gpt5")
    with pytest.raises(ReprogramError, match="not to causes"):
        CAUSES.packaged_specs("dtd", [], "llama")
    assert default_description_files(get_recipe("dvp-cls"), "imagenet_sketch") == [
        "packaged:attributes/imagenet_des.json"
    ]


def test_cause_names_of_packaged_files():
    specs = CAUSES.packaged_specs("dtd", [1, 2, 5])
    assert cause_names(specs, "dtd") == ["pattern", "coarseness/granularity", "regularity"]


def test_listing_lines():
    lines = summary_lines()
    dtd = next(line for line in lines if line.startswith("dtd "))
    assert "causes 1-3, 4-7" in dtd and "llama" in dtd
    assert len(summary_lines("fgvc_aircraft")) == 17
    with pytest.raises(ReprogramError, match="no packaged descriptions"):
        summary_lines("mnist")


# -- describe output ----------------------------------------------------------------------------
def test_describe_output_is_found_with_its_cause_names(tmp_path):
    data = tmp_path / "task"
    out = data / "descriptions"
    classes = ["red disc", "blue square"]
    template_descriptions(classes, "shape", ["shape", "colour", "texture"], out, key="mine")
    assert not list(out.glob("*manifest*.json"))  # a *.json glob never picks up the manifest
    assert (out / MANIFEST_NAME).is_file() and sorted(p.name for p in out.glob("*.json")) == [
        "mine_cse_1.json",
        "mine_cse_2.json",
        "mine_cse_3.json",
    ]
    files = default_description_files(get_recipe("dvp-cse"), f"folder:{data}")
    assert [Path(f).name for f in files] == [
        "mine_cse_1.json",
        "mine_cse_2.json",
        "mine_cse_3.json",
    ]
    assert cause_names(files, f"folder:{data}") == ["shape", "colour", "texture"]
    assert all(is_template_file(f) for f in files)
    assert not is_template_file("packaged:causes/dtd_cse_1.json")


def test_old_json_manifest_is_still_read(tmp_path):
    entry = {"files": {"k_cse_1.json": {"source": "template", "cause": "shape"}}}
    (tmp_path / OLD_MANIFEST_NAME).write_text(json.dumps(entry))
    assert read_manifest(tmp_path)["files"]["k_cse_1.json"]["cause"] == "shape"


def test_two_describe_runs_in_one_folder_are_ambiguous(tmp_path):
    out = tmp_path / "descriptions"
    for key in ("a", "b"):
        template_descriptions(["x", "y"], "thing", ["shape"], out, key=key)
    with pytest.raises(ReprogramError, match="several"):
        default_description_files(get_recipe("dvp-cse"), f"folder:{tmp_path}", [1])


def test_file_record_hashes_the_bytes(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"a": ["some sentence that is long"]}')
    assert file_record(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_record(tmp_path / "gone.json")["sha256"] is None


# -- end to end: the README's command on a tiny CoOp-layout dtd ----------------------------------
def make_dtd(root: Path) -> Path:
    """A CoOp-layout dtd with images of three of its 47 classes."""
    folder = root / "dtd"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(["banded", "blotchy", "braided"]):
        for split_name, count in (("train", 2), ("val", 1), ("test", 2)):
            for i in range(count):
                rel = f"{name}/{name}_{split_name}_{i}.jpg"
                (folder / "images" / name).mkdir(parents=True, exist_ok=True)
                colour = (60 * label + 20, 40 * i, 200 - 50 * label)
                Image.new("RGB", (20, 20), colour).save(folder / "images" / rel)
                split[split_name].append([rel, label, name])
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return root


def save_random_weights(arch: str, path: Path) -> Path:
    """A random-weight open_clip model of ``arch`` saved as a state-dict file (a real load)."""
    from reprogram.backbones.openclip import architecture_config, build_open_clip_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_open_clip_model(architecture_config(arch), False)
    torch.save(model.state_dict(), path)
    return path


def test_train_dvp_cse_on_dtd_with_packaged_descriptions(tmp_path):
    # `tiny` stands in for ViT-B-16 (same command, same file load; ViT-B-16 is far too slow on
    # 2 CPU cores for the suite: see docs/descriptions.md)
    data = make_dtd(tmp_path / "data")
    weights = save_random_weights("tiny", tmp_path / "tiny.pt")
    out = tmp_path / "run"
    args = ["train", "--method", "dvp-cse", "--dataset", "dtd", "--root", str(data)]
    args += ["--backbone", "tiny", "--weights", str(weights), "--out", str(out), "--quiet"]
    args += ["--epochs", "1", "--shots", "2", "--set", "m=3", "--set", "allow_small_classes=true"]
    args += ["--set", "prm_warmup_epochs=0"]
    assert cli(*args) == 0
    results = json.loads((out / "results.json").read_text())
    names = [f"packaged:causes/dtd_cse_{n}.json" for n in (1, 2, 3)]
    assert [d["name"] for d in results["descriptions"]] == names
    for record, name in zip(results["descriptions"], names, strict=True):
        assert record["sha256"] == hashlib.sha256(packaged_bytes(name)).hexdigest()
    assert results["template_descriptions"] is False
    assert results["prompts"] == 3 and results["test_count"] == 6
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    bank = checkpoint["text_bank"]
    assert bank["group_names"] == ["pattern", "coarseness/granularity", "contrast"]
    assert len(bank["texts"]) == 47 and len(bank["texts"][0]) == 9


def test_a_resumed_run_records_packaged_files_as_an_uninterrupted_one(tmp_path):
    data = make_dtd(tmp_path / "data")
    out = tmp_path / "b2n"
    args = ["base2novel", "--method", "dvp-cse", "--dataset", "dtd", "--root", str(data)]
    args += ["--backbone", "random:tiny", "--out", str(out), "--quiet", "--epochs", "2"]
    args += ["--shots", "2", "--set", "m=3", "--set", "allow_small_classes=true"]
    assert cli(*args) == 0
    straight = json.loads((out / "results.json").read_text())["descriptions"]
    names = [f"packaged:causes/dtd_cse_{n}.json" for n in (1, 2, 3)]
    assert [d["name"] for d in straight] == names and all(d["sha256"] for d in straight)
    (out / "results.json").unlink()  # as if killed after the last checkpoint
    (out / "base2novel.json").unlink()
    assert cli(*args, "--resume") == 0
    assert json.loads((out / "results.json").read_text())["descriptions"] == straight
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["config"]["data"]["descriptions"] == names
    assert json.loads((out / "base2novel.json").read_text())["novel_classes"] == 23


def test_packaged_names_stored_as_paths_by_earlier_resumes_are_read_as_names():
    from reprogram.engine.config import TrainConfig
    from reprogram.engine.paths import absolute_paths

    config = TrainConfig()
    config.data.descriptions = ["/home/u/packaged:causes/dtd_cse_1.json", "packaged:x.json"]
    assert absolute_paths(config).data.descriptions == [
        "packaged:causes/dtd_cse_1.json",
        "packaged:x.json",
    ]


# -- the small things ---------------------------------------------------------------------------
def test_toy_backbone_needs_no_weights():
    from reprogram.backbones import load_backbone

    backbone = load_backbone("toy")
    assert backbone.describe()["weights"].endswith("toy-clip.safetensors")


def test_train_help_shows_defaults_unwrapped(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    capsys.readouterr()
    assert cli("train", "--help") == 0
    text = capsys.readouterr().out
    for shown in ("[default: (200)]", "[default: (40.0)]", "[default: (dvp-cse)]"):
        assert shown in text
    # one line each although wider than 80 columns (stdout is a pipe, not a terminal)
    assert "packaged AttrVR attributes from: gpt4omini_llm, gpt4omini_mllm, llama, phi3" in text
    assert max(len(line) for line in text.splitlines()) > 80


def test_reporter_lines_are_not_wrapped(capsys):
    from reprogram.engine.progress import Reporter

    Reporter().line("word " * 40)
    assert capsys.readouterr().err.strip("\n").count("\n") == 0


def test_make_clean_keeps_runs():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nclean:\n", 1)[1].split("\n\n", 1)[0]
    assert "rm -rf" in recipe and "runs" not in recipe.split()


def test_report_overview_names_the_files_and_labels_template_ones():
    from reprogram.report.sections.overview import Overview, render_overview

    def html(template: bool) -> str:
        results = {"descriptions": [{"name": "out/k_cse_1.json", "sha256": "0"}]}
        results["template_descriptions"] = template
        return str(render_overview(Overview(Path("run"), results, None, 2, None, 0, [])))

    assert "out/k_cse_1.json" in html(False) and "TEMPLATE FALLBACK" not in html(False)
    assert "TEMPLATE FALLBACK" in html(True)


def test_descriptions_list_command_and_causes_option(capsys):
    from reprogram.engine.config import load_config

    assert cli("descriptions", "list", "--dataset", "oxford_flowers") == 0
    printed = capsys.readouterr().out
    assert len(printed.splitlines()) == 17 and "cause: fragrance" in printed
    config = load_config(None, {"causes": "4,5,6,7", "description_source": "llama"})
    assert config.data.causes == [4, 5, 6, 7] and config.data.description_source == "llama"


def test_causes_cannot_be_combined_with_explicit_files():
    from reprogram.engine.config import load_config
    from reprogram.engine.setup import build_model

    config = load_config(None, {"dataset": "dtd", "descriptions": "a.json", "causes": "4"})
    with pytest.raises(ReprogramError, match="not with --descriptions"):
        build_model(config, None, ["banded"])  # type: ignore[arg-type]
