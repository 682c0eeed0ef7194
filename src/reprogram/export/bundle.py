"""An exported model on disk: ``manifest.json`` and ``model.safetensors``.

``reprogram export RUN --out DIR`` folds a run's head (:mod:`reprogram.model.fold`) and writes
what inference needs and nothing more:

* ``model.safetensors`` — ``prompts.theta`` (v×3×S×S, the selected epoch's prompts) and ``head``
  (v×D×C, the folded texts, logit scale and aggregation);
* ``manifest.json`` — the format, the method, the class names, the prompts' kind, count, frame,
  input size and names, the backbone as the run loads it (name, weights, QuickGELU) with its
  fingerprint, the preprocessing (image size, resize rule, mean and std), the precision, where it
  came from, and the checksum of the tensor file.

The tensors are written first and the manifest last (both atomically): a folder with a manifest
is complete. Reading checks every field it uses and names the file at fault.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from reprogram.errors import ReprogramError
from reprogram.model.fold import fold_reprogrammer
from reprogram.model.methods import Reprogrammer
from reprogram.model.prompts import PROMPT_KINDS
from reprogram.storage.files import atomic_write, atomic_write_json, ensure_dir, read_json

FORMAT = "reprogram-export/1"
MANIFEST = "manifest.json"
TENSORS = "model.safetensors"
# Evaluation images: the short side resized to the image size (bicubic), then a centre crop,
# scaled to [0, 1] (reprogram.data.images); the prompt bank normalises with mean and std.
RESIZE_RULE = "short-side-bicubic+center-crop"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def exported_from(
    model: Reprogrammer,
    classnames: list[str],
    backbone: dict[str, Any],
    precision: str = "auto",
    source: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The manifest fields and tensors of ``model`` (raises
    :class:`~reprogram.model.fold.NotFoldable` where the head does not fold).

    ``backbone``: how to load it again (``name``, ``weights``, ``quick_gelu``) and its
    ``fingerprint``."""
    head = fold_reprogrammer(model).cpu().contiguous()
    prompts = model.prompts
    manifest = {
        "format": FORMAT,
        "method": model.recipe.name,
        "parts": model.recipe.describe(),
        "classnames": list(classnames),
        "prompts": {
            "kind": prompts.kind,
            "count": prompts.count,
            "frame": prompts.frame,
            "input_size": prompts.input_size,
            "names": list(model.bank.group_names),
        },
        "head": {"prompts": head.shape[0], "dim": head.shape[1], "classes": head.shape[2]},
        "backbone": {
            "name": backbone["name"],
            "weights": backbone.get("weights"),
            "quick_gelu": backbone.get("quick_gelu"),
            "fingerprint": backbone["fingerprint"],
        },
        "preprocessing": {
            "image_size": prompts.image_size,
            "resize": RESIZE_RULE,
            "mean": prompts.mean.flatten().tolist(),
            "std": prompts.std.flatten().tolist(),
        },
        "precision": precision,
        "source": source or {},
    }
    tensors = {"prompts.theta": prompts.theta.detach().float().cpu().contiguous(), "head": head}
    return manifest, tensors


def write_export(out: str | Path, manifest: dict[str, Any], tensors: dict[str, torch.Tensor]):
    """Write the tensors, then the manifest (with the tensors' checksum); the manifest's path."""
    from safetensors.torch import save

    out = ensure_dir(out, "export folder")
    data = save(tensors, {"format": FORMAT})  # bytes written into the umask-honouring temp file
    path = atomic_write(out / TENSORS, lambda tmp: tmp.write_bytes(data))
    manifest = {**manifest, "tensors": {"file": TENSORS, "sha256": _sha256(path)}}
    return atomic_write_json(out / MANIFEST, manifest)


def export_run(
    run_dir: str | Path, out: str | Path, *, device: str = "auto", weights: str | None = None
) -> Path:
    """Fold a finished run's head and write it to ``out`` (see the module docstring); returns
    the manifest's path. ``weights`` points a moved run at its backbone weights (recorded as the
    weights the export loads)."""
    from reprogram.engine.runs import load_run

    run = load_run(run_dir, device=device, weights=weights)
    backbone = run.config.backbone
    best = run.checkpoint["best"]
    source = {
        "run": str(Path(run_dir).resolve()),
        "epoch": best["epoch"] if best["epoch"] > 0 else run.checkpoint.get("epoch"),
        "dataset": run.config.data.dataset,
    }
    manifest, tensors = exported_from(
        run.model,
        run.classnames,
        {
            "name": backbone.name,
            "weights": backbone.weights,
            "quick_gelu": backbone.quick_gelu,
            "fingerprint": run.checkpoint["backbone"]["fingerprint"],
        },
        backbone.precision,
        source,
    )
    return write_export(out, manifest, tensors)


# -- reading ------------------------------------------------------------------------------------
# manifest keys the loader uses: section -> (key, type)
REQUIRED = {
    "": (("format", str), ("method", str), ("classnames", list), ("precision", str)),
    "prompts": (("kind", str), ("count", int), ("frame", int), ("input_size", int)),
    "head": (("prompts", int), ("dim", int), ("classes", int)),
    "backbone": (("name", str), ("fingerprint", str)),
    "preprocessing": (("image_size", int), ("resize", str), ("mean", list), ("std", list)),
    "tensors": (("file", str), ("sha256", str)),
}


def _check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ReprogramError(
            f"{path}: not a reprogram export (format {found!r}, expected '{FORMAT}')"
        )
    for section, keys in REQUIRED.items():
        where = manifest.get(section) if section else manifest
        if not isinstance(where, dict):
            raise ReprogramError(f"{path}: missing section '{section}'")
        for key, kind in keys:
            value = where.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                name = f"{section}.{key}" if section else key
                raise ReprogramError(f"{path}: '{name}' is missing or not a {kind.__name__}")
    if manifest["prompts"]["kind"] not in PROMPT_KINDS:
        raise ReprogramError(
            f"{path}: unknown prompt kind '{manifest['prompts']['kind']}' "
            f"(this version knows {', '.join(PROMPT_KINDS)})"
        )
    if manifest["preprocessing"]["resize"] != RESIZE_RULE:
        raise ReprogramError(
            f"{path}: unknown resize rule '{manifest['preprocessing']['resize']}' "
            f"(this version knows '{RESIZE_RULE}')"
        )
    return manifest


def _expected_shapes(manifest: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    prompts, head = manifest["prompts"], manifest["head"]
    size = prompts["input_size"]
    theta = (prompts["count"], 3, size, size) if prompts["kind"] != "none" else (0,)
    classes = len(manifest["classnames"])
    return {"prompts.theta": theta, "head": (head["prompts"], head["dim"], classes)}


def read_export(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The manifest and tensors of an export folder, checked; one line naming the file at fault."""
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ReprogramError(
            f"{folder}: no exported model here ({MANIFEST} not found; write one with "
            "'reprogram export RUN --out DIR')"
        )
    manifest = _check_manifest(read_json(manifest_path), manifest_path)
    path = folder / Path(manifest["tensors"]["file"]).name
    if not path.is_file():
        raise ReprogramError(f"{path}: not found (named by {manifest_path})")
    if _sha256(path) != manifest["tensors"]["sha256"]:
        raise ReprogramError(f"{path}: damaged (its checksum differs from {manifest_path})")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors' own errors: one line naming the file
        raise ReprogramError(f"{path}: cannot read the tensors ({err})") from err
    for name, shape in _expected_shapes(manifest).items():
        found = tensors.get(name)
        if found is None or tuple(found.shape) != shape:
            got = "missing" if found is None else f"shape {tuple(found.shape)}"
            raise ReprogramError(f"{path}: '{name}' is {got}, {manifest_path} says {shape}")
    return manifest, tensors
