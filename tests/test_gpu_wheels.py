"""``make wheels`` and the install step of ``scripts/gpu-check.sh`` (scripts/gpu_wheels.py): only
what the lent GPU machines' image lacks is carried, the folder's size is checked, and the check
installs the wheels with --no-index --no-deps on top of the machine's own torch."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gw():
    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "scripts" / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_wheels"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


FAKE_INSTALLED = {
    "open_clip_torch": ("3.3.0", ["torch>=2.0", "ftfy", "regex", 'pandas; extra == "training"']),
    "ftfy": ("6.3.1", ["wcwidth"]),
    "wcwidth": ("0.9.5", []),
    "numpy": ("2.4.6", []),
    "oldpy": ("1.0", []),
}


def fake_lookup(name: str):
    return FAKE_INSTALLED.get(name)


def test_carried_are_what_the_image_lacks_or_holds_at_a_refused_version(gw):
    image = {"torch": "2.11.0+cu130", "numpy": "1.20.0", "regex": None, "transformers": None}
    roots = [
        "torch>=2.11,<2.15",  # the image's 2.11.0+cu130 serves
        "open_clip_torch>=2.24",  # absent: carried, and its requirements walked
        "numpy>=1.24",  # the image's 1.20 is refused
        "transformers>=4.40",  # listed without a version: taken as fine
        'oldpy; python_version < "3.12"',  # not on the machines' Python 3.12
    ]
    carried = {c.name: c for c in gw.to_carry(roots, image, fake_lookup)}
    assert sorted(carried) == ["ftfy", "numpy", "open_clip_torch", "wcwidth"]  # not pandas
    assert carried["numpy"].version == "2.4.6"  # the version installed (tested) here
    assert carried["numpy"].reason == "image has 1.20.0, numpy>=1.24 needed"
    assert carried["wcwidth"].reason == "not on the image; for ftfy"


def test_a_package_to_carry_must_be_installed_here(gw):
    with pytest.raises(SystemExit, match="absent_pkg must be carried"):
        gw.to_carry(["absent_pkg"], {}, fake_lookup)


def test_the_projects_carry_list_comes_from_the_published_image_list(gw):
    """The committed list of the image's packages gives this project's wheel list."""
    image = gw.read_image_packages()
    assert image["torch"] == "2.11.0" and image["torchvision"] == "0.26.0"
    assert image["timm"] is None and "open-clip-torch" not in image
    carried = gw.to_carry(gw.project_requirements(), image)
    assert [c.name for c in carried] == ["ftfy", "open_clip_torch", "wcwidth"]


def test_size_check_fails_over_the_limit(gw, tmp_path):
    (tmp_path / "a.whl").write_bytes(b"\0" * 1_500_000)
    assert gw.check_size(tmp_path, 20) == pytest.approx(1.5)
    with pytest.raises(SystemExit, match="holds 1.5 MB, over the 1 MB limit"):
        gw.check_size(tmp_path, 1)


def test_source_digest_follows_the_sources_not_the_caches(gw, tmp_path):
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    first = gw.source_digest(tmp_path)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"cache")
    assert gw.source_digest(tmp_path) == first
    (package / "a.py").write_text("x = 2\n")
    assert gw.source_digest(tmp_path) != first


def test_unmet_requirements_are_named(gw):
    problems = gw.unmet(
        ["numpy>=3", "open_clip_torch", "absent_pkg"], ["open_clip_torch"], fake_lookup
    )
    assert problems == [
        "numpy>=3 (for reprogram): 2.4.6 installed",
        "absent_pkg (for reprogram): not installed",
        "torch>=2.0 (for open_clip_torch): not installed",
        "regex (for open_clip_torch): not installed",
    ]  # ftfy is installed and not walked further: it was not carried


def _tiny_wheel(folder: Path) -> Path:
    """A pure-python wheel of one module, ``tinypkg``."""
    files = {
        "tinypkg/__init__.py": b"VALUE = 7\n",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["tinypkg-0.1.dist-info/RECORD"] = (
        "\n".join([*record, "tinypkg-0.1.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _gpu_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    _tiny_wheel(wheels)
    manifest = {"source_digest": "another tree", "carried": [], "wheels": []}
    (wheels / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "WHEELS": str(wheels), "TMPDIR": str(tmp_path), "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_gpu_check_install_step(tmp_path):
    """The first line, then the --no-index --no-deps install into a folder on PYTHONPATH, with
    this tree's src/ first when the wheels were built from another tree."""
    shown = _gpu_check(tmp_path, "--install-only")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"gpu-check: torch {torch.__version__}, CUDA ")
    assert ", driver " in lines[0] and f"Python {sys.version.split()[0]}" in lines[0]
    assert lines[1].startswith("gpu-check: installed tinypkg-0.1-py3-none-any.whl into")
    assert "built from another src/ than this tree's" in lines[2]
    assert not any("unmet requirement" in line for line in lines)  # this venv satisfies pyproject
    site = tmp_path / "reprogram-gpu-check-site"
    assert (site / "tinypkg" / "__init__.py").read_text() == "VALUE = 7\n"
    assert lines[-1] == f"gpu-check: installed; run with PYTHONPATH={ROOT / 'src'}:{site}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the whole check on this GPU")
def test_gpu_check_stops_at_its_first_line_without_a_gpu(tmp_path):
    shown = _gpu_check(tmp_path, str(tmp_path / "out"))
    assert shown.returncode == 3 and "sees no CUDA GPU" in shown.stderr
    assert shown.stdout.count("\n") == 1 and ", GPU none visible, " in shown.stdout
    assert not (tmp_path / "reprogram-gpu-check-site").exists()  # nothing installed
    assert not (tmp_path / "out").exists()


def test_check_source_accepts_the_tree_it_was_built_from(gw, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"source_digest": gw.source_digest()}))
    assert gw.main(["check-source", str(tmp_path)]) == 0
    (tmp_path / "manifest.json").write_text(json.dumps({"source_digest": "other"}))
    assert gw.main(["check-source", str(tmp_path)]) == 1
