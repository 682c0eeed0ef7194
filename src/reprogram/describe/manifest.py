"""``describe_manifest.json``: how each description file in a folder was made (LLM or template).

Description files must keep the published ``{class: [sentences]}`` shape, so their provenance
lives beside them. The manifest also stops the two sources from being mixed in one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprogram.errors import ReprogramError
from reprogram.io import atomic_write_json, read_json

MANIFEST_NAME = "describe_manifest.json"
TEMPLATE_NOTE = (
    "TEMPLATE FALLBACK, weaker than LLM descriptions: sentences are built from the class name and "
    "cause words only and carry no visual knowledge (see docs/descriptions.md)"
)
SETTINGS_COMPARED = ("model", "prompt", "system", "temperature", "max_tokens", "stop")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's manifest, or an empty one."""
    path = Path(folder) / MANIFEST_NAME
    data = read_json(path) if path.is_file() else {}
    files = data.get("files") if isinstance(data, dict) else None
    return {"files": files if isinstance(files, dict) else {}}


def manifest_entry(path: str | Path) -> dict[str, Any] | None:
    """How the description file ``path`` was made, if its folder's manifest says."""
    path = Path(path)
    try:
        entry = read_manifest(path.parent)["files"].get(path.name)
    except ReprogramError:
        return None
    return entry if isinstance(entry, dict) else None


def is_template(path: str | Path) -> bool:
    entry = manifest_entry(path)
    return bool(entry and entry.get("source") == "template")


def claim_files(folder: str | Path, entries: dict[str, dict[str, Any]]) -> list[str]:
    """Record ``entries`` (file name -> settings, with ``source``) before any file is written.

    Raises if a file would mix sources: template output never overwrites a file not made by the
    template fallback (it may be paid work), and LLM output never tops up a template file.
    Returns warnings for LLM files resumed with different settings (kept under ``earlier``).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    warnings = []
    for name, entry in entries.items():
        old = manifest["files"].get(name)
        old = old if isinstance(old, dict) else None
        exists = (folder / name).exists()
        old_source = old.get("source") if old else None
        if entry["source"] == "template" and exists and old_source != "template":
            raise ReprogramError(
                f"{folder / name} exists and was not made by the template fallback; refusing to "
                "overwrite it (it may be paid LLM work): choose another --out"
            )
        if entry["source"] != "template" and exists and old_source == "template":
            raise ReprogramError(
                f"{folder / name} holds template-fallback descriptions; delete it or choose "
                "another --out before generating with an LLM"
            )
        if old and old_source == entry["source"] != "template":
            changed = [k for k in SETTINGS_COMPARED if old.get(k) != entry.get(k)]
            if changed and exists:
                warnings.append(
                    f"{name}: resuming with different {', '.join(changed)} than the earlier run"
                )
                earlier = old.get("earlier", [])
                entry = {**entry, "earlier": [*earlier, {k: old.get(k) for k in SETTINGS_COMPARED}]}
            elif not changed and "earlier" in old:
                entry = {**entry, "earlier": old["earlier"]}
        manifest["files"][name] = entry
    atomic_write_json(folder / MANIFEST_NAME, manifest)
    return warnings
