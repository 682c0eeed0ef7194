"""What ``make wheels`` carries to a lent GPU machine, and the checks ``gpu-check.sh`` makes there.

The lent machines hold their own PyTorch and many packages (``scripts/gpu-image-packages.txt``)
but can download nothing, and what travels with the tree is limited. So ``.whl/`` holds only
this project's wheel and the part of its runtime dependency closure that the image lacks or holds
at a version our requirements refuse, computed from the packages' metadata:

    python scripts/gpu_wheels.py build [DIR]      # .whl/ by default; fails over LIMIT_MB
    python scripts/gpu_wheels.py list             # what would be carried, and why
    python scripts/gpu_wheels.py check-source DIR # exit 1 when DIR's wheel is not this tree's src/
    python scripts/gpu_wheels.py verify DIR       # exit 1 on an unmet runtime requirement

The walk starts at this project's requirements (``pyproject.toml``, extras ``EXTRAS``) and goes
down only through packages that are carried: a package the image has already brings its own
dependencies. Markers are evaluated for the machines' Python (``TARGET``). Carried versions are
the ones installed where ``build`` runs (the versions the test suite ran with).
Standard library plus ``packaging`` (pip's copy where it is not installed).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "reprogram"
EXTRAS = ("hf",)  # extras the GPU check may load (transformers: Hugging Face backbones)
IMAGE_LIST = ROOT / "scripts" / "gpu-image-packages.txt"
LIMIT_MB = 20.0
# The lent machines' interpreter (KINDS.md: Python 3.12.3, Linux x86_64)
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "os_name": "posix",
}
# pip download tags for platform wheels (pure-python wheels match any of them)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MANIFEST = "manifest.json"

# name -> (installed version, requirement strings), or None when not installed
Lookup = Callable[[str], "tuple[str, list[str]] | None"]


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_image_packages(path: Path = IMAGE_LIST) -> dict[str, str | None]:
    """``name`` or ``name==version`` lines (``#`` comments) → {normalized name: version or None}."""
    packages: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[normalize(name)] = version.strip() or None
    return packages


def installed(name: str) -> tuple[str, list[str]] | None:
    """The installed distribution's version and requirements (this Python's environment)."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    return dist.version, list(dist.requires or [])


def project_requirements(root: Path = ROOT) -> list[str]:
    """The project's runtime requirements and those of ``EXTRAS``, from ``pyproject.toml``
    (from the installed project's metadata on Python 3.10, which has no ``tomllib``)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        _, requires = installed(PROJECT) or ("", [])
        return [r for r in requires if applies(Requirement(r), ("", *EXTRAS))]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for extra in EXTRAS for r in extras.get(extra, []))]


def applies(requirement: Requirement, extras: Iterable[str] = ("",)) -> bool:
    """Whether the requirement holds on the target machine for one of ``extras``."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": extra}) for extra in extras)


@dataclass(frozen=True)
class Carried:
    name: str
    version: str
    reason: str


def to_carry(
    roots: list[str], image: dict[str, str | None], lookup: Lookup = installed
) -> list[Carried]:
    """The packages of the roots' dependency closure that the image lacks or has at a refused
    version; their own requirements are walked the same way. Sorted by name."""
    carried: dict[str, Carried] = {}
    todo = [(Requirement(text), "") for text in roots]
    while todo:
        requirement, wanted_by = todo.pop(0)
        if not applies(requirement):
            continue
        key = normalize(requirement.name)
        if key in carried:
            continue
        if key not in image:
            reason = "not on the image"
        elif image[key] is None or requirement.specifier.contains(
            Version(image[key]), prereleases=True
        ):
            continue  # the image's copy serves (a version not listed is taken as fine)
        else:
            reason = f"image has {image[key]}, {requirement} needed"
        found = lookup(requirement.name)
        if found is None:
            raise SystemExit(
                f"gpu-wheels: {requirement.name} must be carried ({reason}) but is not installed "
                "here; install the project's dependencies first (make install)"
            )
        version, requires = found
        if wanted_by:
            reason += f"; for {wanted_by}"
        carried[key] = Carried(requirement.name, version, reason)
        todo += [(Requirement(text), requirement.name) for text in requires]
    return sorted(carried.values(), key=lambda c: normalize(c.name))


def source_digest(root: Path = ROOT) -> str:
    """sha256 over the package's files under ``src/`` (paths and contents, caches left out)."""
    digest = hashlib.sha256()
    base = root / "src"
    for path in sorted(base.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(path.relative_to(base).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def check_size(folder: Path, limit_mb: float = LIMIT_MB) -> float:
    """The folder's size in MB; ``SystemExit`` with one line when it is over ``limit_mb``."""
    size = folder_megabytes(folder)
    if size > limit_mb:
        raise SystemExit(
            f"gpu-wheels: {folder} holds {size:.1f} MB, over the {limit_mb:g} MB limit "
            "(what travels to a lent machine is limited)"
        )
    return size


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def build(out: Path, image: dict[str, str | None]) -> list[Carried]:
    """Write this project's wheel and the carried wheels into ``out`` (emptied first)."""
    carry = to_carry(project_requirements(), image)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    _pip("wheel", "--no-deps", "-w", str(out), str(ROOT))
    if carry:
        tags = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        _pip(
            "download", "--no-deps", "--only-binary=:all:", "--python-version",
            TARGET["python_version"], *tags, "-d", str(out),
            *(f"{c.name}=={c.version}" for c in carry),
        )  # fmt: skip
    manifest = {
        "source_digest": source_digest(),
        "carried": [c.__dict__ for c in carry],
        "wheels": sorted(p.name for p in out.glob("*.whl")),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return carry


def unmet(roots: list[str], descend: Iterable[str], lookup: Lookup = installed) -> list[str]:
    """Requirements that this environment does not satisfy: the roots, and the requirements of
    the packages named in ``descend`` (the carried ones: the image's packages bring their own)."""
    descend = {normalize(name) for name in descend}
    problems, seen = [], set()
    todo = [(Requirement(text), PROJECT) for text in roots]
    while todo:
        requirement, wanted_by = todo.pop(0)
        key = normalize(requirement.name)
        if not applies(requirement) or (key, str(requirement.specifier)) in seen:
            continue
        seen.add((key, str(requirement.specifier)))
        found = lookup(requirement.name)
        if found is None:
            problems.append(f"{requirement} (for {wanted_by}): not installed")
            continue
        version, requires = found
        if not requirement.specifier.contains(Version(version), prereleases=True):
            problems.append(f"{requirement} (for {wanted_by}): {version} installed")
        if key in descend:
            todo += [(Requirement(text), requirement.name) for text in requires]
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "list"
    if command == "list":
        for c in to_carry(project_requirements(), read_image_packages()):
            print(f"{c.name}=={c.version}  # {c.reason}")
        return 0
    if command == "build":
        out = Path(argv[1]) if len(argv) > 1 else ROOT / ".whl"
        carry = build(out, read_image_packages())
        size = check_size(out)
        wheels = sorted(p.name for p in out.glob("*.whl"))
        print(f"gpu-wheels: {len(wheels)} wheels, {size:.1f} MB in {out} (limit {LIMIT_MB:g} MB)")
        for c in carry:
            print(f"  {c.name}=={c.version}: {c.reason}")
        return 0
    if command == "check-source":
        manifest = json.loads((Path(argv[1]) / MANIFEST).read_text(encoding="utf-8"))
        return 0 if manifest.get("source_digest") == source_digest() else 1
    if command == "verify":
        manifest = json.loads((Path(argv[1]) / MANIFEST).read_text(encoding="utf-8"))
        problems = unmet(project_requirements(), [c["name"] for c in manifest["carried"]])
        for line in problems:
            print(f"gpu-check: unmet requirement {line}")
        return 1 if problems else 0
    print(f"gpu-wheels: unknown command {command!r} (list, build, check-source, verify)")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
