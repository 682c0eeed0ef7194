"""``descriptions check``: missing classes, too few valid sentences, duplicates; published sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import describe_app
from typer.testing import CliRunner

from reprogram.data import DATASETS
from reprogram.errors import ReprogramError
from reprogram.text.describe.check import check_descriptions, check_file, infer_dataset
from reprogram.text.describe.classes import read_class_list
from reprogram.text.packaged import materialize, packaged_files

CLASSES = ["banded", "dotted", "zigzagged"]


def sentences(name: str, count: int = 20) -> list[str]:
    return [f"Sentence number {i} describing the {name} texture" for i in range(count)]


def write(path: Path, data: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_complete_file_passes(tmp_path: Path) -> None:
    path = write(tmp_path / "toy_cse_1.json", {c: sentences(c) for c in CLASSES})
    report = check_descriptions([path], CLASSES)
    assert report.ok and report.files[0].classes == 3
    assert report.files[0].problems() == report.files[0].warnings() == []


def test_problems_and_warnings_are_reported(tmp_path: Path) -> None:
    data = {
        "banded": sentences("banded", 4) + ["too short", ""],  # 4 valid < min_valid
        "Dotted": sentences("dotted"),  # a near miss for 'dotted'
        "zigzagged": sentences("zigzagged", 12) + [" " + sentences("zigzagged", 1)[0].upper()],
    }
    report = check_file(write(tmp_path / "toy.json", data), CLASSES, min_valid=5, target=20)
    assert report.missing == ["dotted"] and report.extra == ["Dotted"]
    assert report.near_misses == {"dotted": "Dotted"}
    assert report.too_few == {"banded": 4}
    assert report.below_target == {"zigzagged": 13}
    assert report.duplicates == {"zigzagged": 1}
    assert report.problems() == ["1 missing classes", "1 classes with too few valid sentences"]
    assert len(report.warnings()) == 3


def test_duplicate_sentences_are_only_a_warning_unless_strict(tmp_path: Path) -> None:
    data = {c: sentences(c, 10) * 2 for c in CLASSES}  # 20 valid, 10 of them repeats
    path = write(tmp_path / "toy.json", data)
    assert check_descriptions([path], CLASSES).ok
    assert not check_descriptions([path], CLASSES, strict=True).ok


def test_repeated_class_keys_in_the_json_are_a_problem(tmp_path: Path) -> None:
    body = ", ".join(f'"{c}": {json.dumps(sentences(c))}' for c in [*CLASSES, "banded"])
    path = tmp_path / "toy.json"
    path.write_text("{" + body + "}", encoding="utf-8")
    report = check_descriptions([path], CLASSES)
    assert not report.ok and report.files[0].duplicate_keys == ["banded"]


def test_unreadable_files_are_problems_not_crashes(tmp_path: Path) -> None:
    bad_json = tmp_path / "a.json"
    bad_json.write_text("{not json")
    wrong_shape = write(tmp_path / "b.json", {"banded": "one string"})  # type: ignore[dict-item]
    report = check_descriptions([bad_json, wrong_shape, tmp_path / "missing.json"], CLASSES)
    assert not report.ok
    assert all(f.error for f in report.files)


def test_every_class_needs_at_least_one_valid_sentence() -> None:
    with pytest.raises(ReprogramError):
        check_descriptions([Path("x.json")], CLASSES, min_valid=0)


def test_report_serialises_to_json(tmp_path: Path) -> None:
    path = write(tmp_path / "toy.json", {"banded": sentences("banded")})
    data = json.loads(json.dumps(check_descriptions([path], CLASSES).to_dict()))
    assert data["ok"] is False and data["files"][0]["missing"] == ["dotted", "zigzagged"]
    assert data["files"][0]["problems"] == ["2 missing classes"]


def test_infer_dataset_from_published_file_names() -> None:
    assert infer_dataset(["x/dtd_cse_1.json", "dtd_csl_5.json", "dtd_des.json"]) == "dtd"
    assert infer_dataset(["fgvc_dist.json"]) == "fgvc_aircraft"
    assert infer_dataset(["oxford_pets_cse_2.json"]) == "oxford_pets"
    assert infer_dataset(["dtd_cse_1.json", "eurosat_cse_1.json"]) is None
    assert infer_dataset(["mine_cse_1.json"]) is None


def test_read_class_list_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\ufeffrobin\n\n blue jay \n")
    (tmp_path / "b.json").write_text('["robin", "blue jay"]')
    (tmp_path / "c.json").write_text('{"robin": [], "blue jay": []}')
    for name in ("a.txt", "b.json", "c.json"):
        assert read_class_list(tmp_path / name) == ["robin", "blue jay"]
    (tmp_path / "d.txt").write_text("robin\nrobin\n")
    with pytest.raises(ReprogramError, match="repeated"):
        read_class_list(tmp_path / "d.txt")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(ReprogramError, match="no class names"):
        read_class_list(tmp_path / "e.txt")


def test_cli_check_exit_codes_and_json(tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES))
    good = write(tmp_path / "good.json", {c: sentences(c) for c in CLASSES})
    bad = write(tmp_path / "bad.json", {"banded": sentences("banded")})
    runner = CliRunner()
    ok = runner.invoke(
        describe_app(), ["descriptions", "check", str(good), "--classes", str(classes)]
    )
    assert ok.exit_code == 0, ok.output
    assert "all files pass" in ok.output
    args = ["descriptions", "check", str(good), str(bad), "--classes", str(classes)]
    fail = runner.invoke(describe_app(), args)
    assert fail.exit_code == 1
    assert "FAIL" in fail.output and "missing: dotted, zigzagged" in fail.output
    as_json = runner.invoke(
        describe_app(), ["descriptions", "check", str(bad), "--classes", str(classes), "--json"]
    )
    assert as_json.exit_code == 1 and json.loads(as_json.output)["ok"] is False
    unknown = runner.invoke(describe_app(), ["descriptions", "check", str(good)])
    assert isinstance(unknown.exception, ReprogramError)


def test_cli_check_passes_on_published_dtd_file() -> None:
    path = materialize("packaged:causes/dtd_cse_1.json")
    result = CliRunner().invoke(
        describe_app(), ["descriptions", "check", str(path), "--dataset", "dtd"]
    )
    assert result.exit_code == 0, result.output


def test_every_published_file_passes() -> None:
    by_key = {info.description_key: name for name, info in DATASETS.items()}
    paths = sorted(materialize(f.spec) for f in packaged_files() if not f.source)
    assert len(paths) >= 66
    for key, name in by_key.items():
        mine = [p for p in paths if infer_dataset([p]) == name]
        assert mine, key
        report = check_descriptions(mine, DATASETS[name].classnames)
        assert report.ok, [(f.path, f.problems()) for f in report.files if f.problems()]
