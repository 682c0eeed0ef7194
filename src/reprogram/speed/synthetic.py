"""A synthetic dataset for benchmarks and tests: JPEG files in the class-per-folder layout.

``root/{train,val,test}/<class>/*.jpg`` (read by ``folder:root``) plus description files in
``root/descriptions/`` (``cse_1..3.json`` for DVP-cse, ``des.json`` / ``dist.json`` for
AttrVR and DVP-cls), so that every method finds its texts without further options.
Images are smooth random colour fields with a little noise, so JPEG sizes and decode times are
those of ordinary photographs rather than of flat or pure-noise images.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

CAUSES = ("shape", "colour", "texture")
WORDS = (
    "bright",
    "dark",
    "smooth",
    "rough",
    "striped",
    "round",
    "narrow",
    "wide",
    "glossy",
    "matte",
    "dotted",
    "curved",
    "angular",
    "soft",
    "sharp",
    "pale",
    "vivid",
    "layered",
    "uneven",
    "regular",
)


@dataclass(frozen=True)
class SyntheticSize:
    """A synthetic task's size; the defaults are DTD's (47 classes, 16 shots, 1,692 test images)."""

    classes: int = 47
    train_per_class: int = 16
    test_images: int = 1692
    image_size: int = 320  # side of the source JPEGs

    def size(self) -> dict[str, int]:
        """These fields by name (to give another size-carrying object the same size)."""
        return {f.name: getattr(self, f.name) for f in fields(SyntheticSize)}


@dataclass(frozen=True)
class SyntheticSpec(SyntheticSize):
    """What :func:`write_dataset` writes: the size, its validation images and descriptions, the
    seed and the JPEG quality."""

    val_per_class: int = 4
    descriptions_per_class: int = 25
    seed: int = 0
    quality: int = 90


def classnames(count: int) -> list[str]:
    return [f"class_{i:03d}" for i in range(count)]


def _image(rng: np.random.Generator, size: int, label: int) -> Image.Image:
    base = rng.random((8, 8, 3)) * 0.6 + 0.2 * np.array(
        [(label * 37 % 11) / 10, (label * 17 % 7) / 6, 0.5]
    )
    small = Image.fromarray((base.clip(0, 1) * 255).astype(np.uint8))
    field = np.asarray(small.resize((size, size), Image.BICUBIC), dtype=np.float32)
    field += rng.normal(0.0, 12.0, field.shape).astype(np.float32)
    return Image.fromarray(field.clip(0, 255).astype(np.uint8))


def description_files(
    names: list[str], folder: Path, per_class: int, seed: int = 0
) -> dict[str, Path]:
    """Write ``cse_1..3.json``, ``des.json`` and ``dist.json`` ({class: [sentence, ...]})."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = {}
    kinds = [(f"cse_{i + 1}", f"its {cause}") for i, cause in enumerate(CAUSES)]
    kinds += [("des", "what it looks like"), ("dist", "what sets it apart")]
    for stem, topic in kinds:
        data = {}
        for name in names:
            readable = name.replace("_", " ")
            data[name] = [
                f"A {readable} image, described by {topic}: {' '.join(rng.choice(WORDS, 3))} ({k})."
                for k in range(per_class)
            ]
        path = folder / f"{stem}.json"
        path.write_text(json.dumps(data, indent=1))
        files[stem] = path
    return files


def write_dataset(
    root: str | Path, spec: SyntheticSpec = SyntheticSpec(), workers: int = 8
) -> Path:
    """Write the dataset under ``root`` (which must be empty or missing); returns ``root``."""
    root = Path(root)
    names = classnames(spec.classes)
    jobs: list[tuple[Path, int, int]] = []
    counter = 0
    for split, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class)):
        for label, name in enumerate(names):
            for k in range(per_class):
                jobs.append((root / split / name / f"{k:05d}.jpg", label, counter))
                counter += 1
    for k in range(spec.test_images):
        label = k % spec.classes
        jobs.append((root / "test" / names[label] / f"{k:05d}.jpg", label, counter))
        counter += 1
    for split in ("train", "val", "test"):
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)

    def write(job: tuple[Path, int, int]) -> None:
        path, label, index = job
        rng = np.random.default_rng([spec.seed, index])
        _image(rng, spec.image_size, label).save(path, quality=spec.quality)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(write, jobs))
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    description_files(names, root / "descriptions", spec.descriptions_per_class, spec.seed)
    return root
