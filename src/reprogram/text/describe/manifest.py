"""``describe_manifest.yaml``: how each description file in a folder was made (LLM or template).

Description files must keep the published ``{class: [sentences]}`` shape, so their provenance
lives beside them; the manifest is YAML so that a glob such as ``out/*.json`` never picks it up
as a description file (``describe_manifest.json``, its former name, is still read). The manifest
also stops the two sources from being mixed in one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reprogram.errors import ReprogramError
from reprogram.storage.files import atomic_write_text, read_json

MANIFEST_NAME = "describe_manifest.yaml"
OLD_MANIFEST_NAME = "describe_manifest.json"  # written before 2026-12; still read
TEMPLATE_NOTE = (
    "TEMPLATE FALLBACK, weaker than LLM descriptions: sentences are built from the class name and "
    "cause words only and carry no visual knowledge (see docs/descriptions.md)"
)
SETTINGS_COMPARED = ("model", "prompt", "system", "temperature", "max_tokens", "stop")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's manifest, or an empty one."""
    path, old = Path(folder) / MANIFEST_NAME, Path(folder) / OLD_MANIFEST_NAME
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ReprogramError(f"{path}: cannot read the manifest ({err})") from err
    else:
        data = read_json(old) if old.is_file() else {}
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
    atomic_write_text(
        folder / MANIFEST_NAME, yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    )
    return warnings


def cause_name(path: str | Path) -> str | None:
    """The cause a description file was generated for, if its folder's manifest says."""
    entry = manifest_entry(path)
    cause = entry.get("cause") if entry else None
    return cause if isinstance(cause, str) and cause else None
