"""`reprogram table`: the packaged published tables, seed flags, and the table beside the papers.

Finished runs are faked (config.yaml + results.json, no training): runs that say they used
ViT-B-16 with OpenAI weights on eurosat and dtd meet the published rows; a toy run meets none.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from helpers import cli
from PIL import Image

from reprogram.data.catalog import dataset_info
from reprogram.engine.config import TrainConfig, save_config
from reprogram.errors import ReprogramError
from reprogram.model.methods import list_methods
from reprogram.report.published import (
    parse_rows,
    published_average,
    published_backbone,
    published_cell,
    published_rows,
)
from reprogram.report.table import TableOptions, build_table, flag_seeds, make_table

ELEVEN = [
    "fgvc_aircraft",
    "caltech101",
    "stanford_cars",
    "dtd",
    "eurosat",
    "oxford_flowers",
    "food101",
    "oxford_pets",
    "sun397",
    "ucf101",
    "resisc45",
]
VIT_B_16 = {"arch": "ViT-B-16", "weights": "/w/ViT-B-16.pt", "quick_gelu_used": True}


# ---- the published tables ----------------------------------------------------------------


def test_each_published_average_is_the_mean_of_its_cells():
    full = [r for r in published_rows() if r.average is not None and len(r.cells) == 11]
    assert len(full) >= 12  # the DVP paper's 10 rows and RVP's 2
    for row in full:
        assert set(row.cells) == set(ELEVEN), row
        assert statistics.fmean(row.cells.values()) == pytest.approx(row.average, abs=0.1), row


def test_averages_quoted_twice_agree():
    """The RVP paper's averages over backbones quote the DVP paper's full rows."""
    given: dict[tuple, set[float]] = {}
    for row in published_rows():
        if row.average is not None and row.variant is None and row.method:
            given.setdefault((row.method, row.backbone), set()).add(row.average)
    assert len(given) == 20  # 5 methods × 4 backbones
    assert {k: v for k, v in given.items() if len(v) > 1} == {}


def test_published_names_are_ours():
    rows = published_rows()
    for row in rows:
        for dataset in row.cells:
            assert dataset_info(dataset).name == dataset
        assert row.shots == 16 and row.seeds == 3 and row.source and row.paper
    methods = {r.method for r in rows if r.method}
    assert methods >= {"vp", "ar", "attrvr", "dvp-cse", "dvp-cls", "rvp"}
    assert methods - set(list_methods()) <= {"rvp"}  # RVP arrives with its own issue
    assert {r.backbone for r in rows} == {"ViT-B/16", "ViT-B/32", "RN50", "RN101"}


def test_a_row_overrides_its_file_defaults_and_a_missing_key_is_named():
    defaults = {"source": "main table", "shots": 16, "seeds": 3, "statistic": "mean"}
    defaults |= {"weights": "OpenAI", "datasets": ["dtd", "eurosat"]}
    data = {"paper": "P", "defaults": defaults}
    data["rows"] = [
        {"method": "vp", "name": "VP", "backbone": "RN50", "average": 50.0},
        {"method": "ar", "name": "AR", "backbone": "RN50", "cells": {"dtd": 40}, "table": "3"},
    ]
    first, second = parse_rows("p.json", data)
    assert (first.datasets, first.citation) == (("dtd", "eurosat"), "P; main table")
    assert (second.datasets, second.cells, second.citation) == (
        ("dtd",),
        {"dtd": 40.0},
        "P; main table, table 3",
    )
    del data["rows"][1]["backbone"]
    with pytest.raises(ReprogramError, match=r"published table p.json: row 2 has no 'backbone'"):
        parse_rows("p.json", data)


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        (VIT_B_16, "ViT-B/16"),
        ({"arch": "ViT-B/32"}, "ViT-B/32"),
        ({"arch": "RN50-quickgelu", "quick_gelu_used": True}, "RN50"),
        ({"arch": "hf:/models/clip-vit-base-patch16"}, "ViT-B/16"),
        ({"arch": "local-dir:/models/RN101/"}, "RN101"),
        ({"arch": "random:ViT-B-16"}, None),
        ({"arch": "toy", "quick_gelu_used": False}, None),
        ({"arch": "ViT-B-16", "quick_gelu_used": False}, None),  # not OpenAI's weights
        ({"arch": "ViT-L-14"}, None),
        (None, None),
    ],
)
def test_a_run_backbone_is_matched_to_the_published_one(backbone, expected):
    assert published_backbone(backbone) == expected


def test_published_numbers_by_method_dataset_backbone_and_shots():
    assert published_cell("dvp-cls", "eurosat", "ViT-B/16", 16).value == 94.1
    assert published_cell("dvp-cse", "dtd", "ViT-B/16", 16).value == 66.7
    assert published_cell("ar", "fgvc", "RN50", 16).value == 18.6  # our alias of the dataset
    assert published_cell("dvp-cse", "eurosat", "ViT-B/16", 16) is None  # not published
    assert published_cell("dvp-cls", "eurosat", "ViT-B/16", 4) is None
    assert published_cell("dvp-cls", "folder:/x", "ViT-B/16", 16) is None
    assert published_average("dvp-cls", ELEVEN, "ViT-B/16", 16).value == 79.7  # the paper's
    assert published_average("vp", ELEVEN, "RN101", 16).value == 57.5  # an average-only row
    assert published_average("vp", ["dtd", "eurosat"], "RN101", 16) is None
    two = published_average("vp", ["dtd", "eurosat"], "ViT-B/16", 16)
    assert two.value == pytest.approx((61.4 + 91.2) / 2)


# ---- flagged seeds -------------------------------------------------------------------------


def test_coop_24_seeds_are_flagged():
    """CoOp issue #24: DTD seeds 12.0 / 15.2 / 63.4. Alone, the seeds cannot say which side
    collapsed; with a zero-shot run (DTD ≈ 44) the two collapsed seeds are named."""
    alone = flag_seeds([12.0, 15.2, 63.4])
    assert [bool(f) for f in alone] == [False, False, True]
    assert "far from the other seeds (13.6 ± 2.3)" in alone[2][0]
    with_zero_shot = flag_seeds([12.0, 15.2, 63.4], zero_shot=44.0)
    assert [len(f) for f in with_zero_shot] == [1, 1, 1]
    assert with_zero_shot[0][0].startswith("below zero-shot (44.0) where another seed reaches 63.4")


def test_ordinary_seeds_are_not_flagged():
    assert flag_seeds([70.0, 70.3, 69.8, 71.0]) == [[], [], [], []]
    assert flag_seeds([82.1, 82.5, 82.3], zero_shot=86.0) == [[], [], []]  # all below: the method
    assert flag_seeds([50.0, 51.0], zero_shot=52.0) == [[], []]  # too few seeds, none beat it
    # two identical seeds: their spread counts as min_spread
    assert flag_seeds([70.0, 70.0, 67.0]) == [[], [], []]
    assert flag_seeds([70.0, 70.0, 63.0])[2]
    assert flag_seeds([70.0, 70.0, 67.0], options=TableOptions(min_spread=0.5))[2]


# ---- the table -----------------------------------------------------------------------------


def fake_run(
    folder: Path,
    method: str,
    dataset: str,
    seed: int,
    accuracy: float,
    backbone: dict | None = None,
    **settings,
) -> Path:
    """A finished run folder (config.yaml + results.json) without training."""
    backbone = {**(backbone or VIT_B_16), "fingerprint": "f16"}
    config = TrainConfig().updated(
        method=method,
        dataset=dataset,
        backbone=backbone["arch"],
        shots=settings.pop("shots", 16),
        seed=seed,
        **settings,
    )
    folder.mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    results = {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "shots": config.data.shots,
        "epochs": config.optim.epochs,
        "backbone": backbone,
        "test_accuracy": accuracy,
        "wall_time_s": 2.0,
    }
    (folder / "results.json").write_text(json.dumps(results))
    return folder


TOY = {"arch": "toy", "weights": "toy.pt", "quick_gelu_used": False}


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed, accuracy in ((1, 0.940), (2, 0.936), (3, 0.120)):  # seed 3 collapsed
        fake_run(
            root / "eurosat" / "dvp-cls" / f"seed-{seed}", "dvp-cls", "eurosat", seed, accuracy
        )
    for seed, accuracy in ((1, 0.650), (2, 0.660)):
        fake_run(root / "dtd" / "dvp-cls" / f"seed-{seed}", "dvp-cls", "dtd", seed, accuracy)
    fake_run(root / "eurosat" / "ar" / "seed-1", "ar", "eurosat", 1, 0.93)
    fake_run(root / "dtd" / "ar" / "seed-1", "ar", "dtd", 1, 0.61)
    fake_run(root / "eurosat" / "ar-50" / "seed-1", "ar", "eurosat", 1, 0.90, epochs=50)
    fake_run(root / "eurosat" / "zero-shot", "zero-shot", "eurosat", 1, 0.48)
    fake_run(root / "toy" / "vp", "vp", "folder:/data/task", 1, 0.70, TOY)
    return root


def test_table_puts_published_numbers_beside_like_runs_and_flags_the_planted_seed(runs):
    table, written = make_table([runs])
    assert written == []
    blocks = {b.backbone: b for b in table.blocks}
    assert set(blocks) == {"ViT-B/16", "toy"}
    vit = blocks["ViT-B/16"]
    assert vit.datasets == ["dtd", "eurosat"]
    rows = {row.label: row for row in vit.rows}
    assert set(rows) == {"zero-shot", "ar [epochs=200]", "ar [epochs=50]", "dvp-cls"}

    cell = rows["dvp-cls"].cells["eurosat"]
    assert cell.n == 3 and cell.mean == pytest.approx((94.0 + 93.6 + 12.0) / 3)
    assert cell.published == 94.1 and cell.difference == pytest.approx(cell.mean - 94.1)
    assert "ICML 2025" in cell.source
    assert cell.zero_shot == pytest.approx(48.0)
    (flagged,) = cell.flagged
    assert flagged.seed == 3 and flagged.run.endswith("seed-3")
    assert [f.split(" (")[0] for f in flagged.flags] == [
        "far from the other seeds",
        "below zero-shot",
    ]
    dtd = rows["dvp-cls"].cells["dtd"]
    assert (
        dtd.published == 65.5 and dtd.flagged == [] and dtd.std == pytest.approx(0.7071, abs=1e-3)
    )

    # the average over the block's datasets, beside the published cells' mean over the same
    assert rows["dvp-cls"].average == pytest.approx((dtd.mean + cell.mean) / 2)
    assert rows["dvp-cls"].published_average == pytest.approx((65.5 + 94.1) / 2)
    assert rows["ar [epochs=200]"].cells["dtd"].published == 62.0
    assert rows["ar [epochs=50]"].average is None  # no dtd run
    assert rows["zero-shot"].cells["eurosat"].published is None

    toy = blocks["toy"]
    assert toy.published_backbone is None
    assert toy.rows[0].cells["folder:/data/task"].published is None


def test_table_command_prints_and_writes_every_output(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli("table", str(runs), "--out", str(out)) == 0
    printed = capsys.readouterr()
    assert "| dvp-cls | 65.5 ± 0.7 (n=2) · 65.5 (+0.0) | 66.5 ± 47.2 (n=3) ⚠ · 94.1 (−27.6) |" in (
        printed.out
    )
    assert "- dvp-cls on eurosat, seed 3: 12.0 — far from the other seeds" in printed.out
    assert "| vp | 70.0 (n=1) · — | 70.0 · — |" in printed.out
    assert "written:" in printed.err
    names = {p.name for p in out.iterdir()}
    assert names == {"table.md", "table.csv", "table.json", "table-ViT-B-16.png", "table-toy.png"}
    assert (out / "table.md").read_text(encoding="utf-8") == printed.out

    lines = list(csv.DictReader((out / "table.csv").open(encoding="utf-8")))
    by_key = {(r["backbone"], r["method"], r["variant"], r["dataset"]): r for r in lines}
    esat = by_key[("ViT-B/16", "dvp-cls", "", "eurosat")]
    assert (esat["seeds"], esat["flagged_seeds"], esat["published"]) == ("1 2 3", "3", "94.10")
    assert float(esat["difference"]) == pytest.approx(66.533 - 94.1, abs=0.01)
    assert float(by_key[("ViT-B/16", "dvp-cls", "", "average")]["published"]) == 79.8

    saved = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert saved["options"] == {"outlier_std": 3.0, "min_spread": 2.0, "zero_shot_margin": 3.0}
    assert len(saved["blocks"]) == 2
    with Image.open(out / "table-ViT-B-16.png") as image:
        assert image.width > 400 and image.height > 200


def test_options_change_what_is_flagged(runs, tmp_path, capsys):
    assert cli("table", str(runs), "--out", str(tmp_path / "o"), "--outlier-std", "100") == 0
    printed = capsys.readouterr().out
    assert "far from the other seeds" not in printed
    assert "below zero-shot (48.0)" in printed  # the zero-shot rule still flags it
    table = build_table(
        sorted(p.parent for p in runs.glob("eurosat/dvp-cls/*/results.json")),
        TableOptions(outlier_std=100),
    )
    assert table.blocks[0].rows[0].cells["eurosat"].flagged == []  # no zero-shot run given


@pytest.mark.parametrize("case", ["empty", "unfinished", "missing"])
def test_bad_input_is_one_line(case, tmp_path, capsys):
    folder = tmp_path / "runs"
    if case != "missing":
        folder.mkdir()
    if case == "unfinished":
        (folder / "seed-1").mkdir()
        (folder / "seed-1" / "checkpoint.pt").write_bytes(b"")
    assert cli("table", str(folder), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = "not a run folder" if case == "missing" else "no finished runs (results.json)"
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert not (tmp_path / "out").exists()
