"""Exported models: a run's head folded into one D×C matrix per prompt, written with its prompts
(``reprogram export``) and loaded for inference without the text encoder or the descriptions."""

from reprogram.export.bundle import FORMAT, export_run, exported_from, read_export, write_export
from reprogram.export.exported import ExportedModel, load_exported

__all__ = [
    "FORMAT",
    "ExportedModel",
    "export_run",
    "exported_from",
    "load_exported",
    "read_export",
    "write_export",
]
