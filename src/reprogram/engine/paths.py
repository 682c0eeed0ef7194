"""Paths in a run's config made absolute, so that a run folder works from any folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reprogram.text.packaged import PREFIX as PACKAGED  # a packaged file's name: no path

if TYPE_CHECKING:
    from reprogram.engine.config import TrainConfig

PATH_PREFIXES = ("folder:", "csv:", "local-dir:", "hf:")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _absolute_spec(spec: str, bare_folder: bool = False) -> str:
    """``folder:PATH``-style specs with an absolute PATH; with ``bare_folder`` also a bare
    existing folder (a backbone folder given without ``--weights``)."""
    for prefix in PATH_PREFIXES:
        if spec.startswith(prefix):
            return prefix + _absolute(spec[len(prefix) :])
    if bare_folder and spec and Path(spec).expanduser().is_dir():
        return _absolute(spec)
    return spec


def _description_spec(spec: str) -> str:
    """A description file made absolute; ``packaged:NAME`` stays a name, also where an earlier
    version stored it as ``<folder>/packaged:NAME`` (its resumed runs did)."""
    if spec.startswith(PACKAGED):
        return spec
    head, found, name = spec.partition("/" + PACKAGED)
    if found and head and not Path(spec).exists():
        return PACKAGED + name
    return _absolute(spec)


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """Make every path a run stores absolute (relative ones are read from the current folder),
    so that ``eval``, ``predict``, ``explain`` and ``--resume`` work from any folder.

    Names (``dtd``, ``ViT-B-16``, ``random:tiny``, ``packaged:…`` description files) and weight
    tags that are no path stay as given.
    """
    data, backbone = config.data, config.backbone
    data.dataset = _absolute_spec(data.dataset)
    backbone.name = _absolute_spec(backbone.name, bare_folder=backbone.weights is None)
    if data.root:
        data.root = _absolute(data.root)
    if backbone.weights and (
        Path(backbone.weights).expanduser().exists() or any(c in backbone.weights for c in "/\\~")
    ):
        backbone.weights = _absolute(backbone.weights)
    data.descriptions = [_description_spec(p) for p in data.descriptions]
    return config
