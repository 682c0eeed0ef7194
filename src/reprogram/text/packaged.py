"""The published description sets, shipped inside the package (one ``.tar.xz``).

The archive (``assets/descriptions/descriptions.tar.xz``, rebuilt by
``scripts/pack-descriptions.py``) holds the files of the DVP and AttrVR releases byte for byte
(their sha256 equals the upstream files'), with both MIT notices and the README. A run names a
packaged file ``packaged:causes/dtd_cse_1.json``; it is extracted once into the user's cache so
every path-based tool reads it like any other file.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from reprogram.errors import ReprogramError
from reprogram.storage.cache import Cache
from reprogram.storage.files import atomic_write

PREFIX = "packaged:"
ARCHIVE = "descriptions.tar.xz"
SOURCES = ("gpt4omini_llm", "gpt4omini_mllm", "llama", "phi3")  # AttrVR's other description LLMs
PAPER_CAUSES = (1, 2, 3)
_NAME = re.compile(
    r"^(?:(?P<folder>causes|attributes)|attributes-other-llms/(?P<source>[^/]+))/"
    r"(?P<key>.+)_(?P<kind>cse|csl|des|dist)(?:_(?P<number>\d+))?\.json$"
)


@dataclass(frozen=True)
class PackagedFile:
    """One packaged description file and what its name says."""

    name: str  # path inside the archive, e.g. causes/dtd_cse_1.json
    key: str  # published dataset key (dtd, fgvc, …)
    kind: str  # cse | csl | des | dist
    number: int | None  # the cause's number (cse/csl)
    source: str  # "" for the papers' own sets, else an AttrVR source (llama, …)

    @property
    def spec(self) -> str:
        return PREFIX + self.name


def _archive_file():
    return resources.files("reprogram") / "assets" / "descriptions" / ARCHIVE


@lru_cache(maxsize=1)
def _members() -> dict[str, bytes]:
    try:
        packed = _archive_file().read_bytes()
    except OSError as err:
        raise ReprogramError(f"packaged descriptions missing ({ARCHIVE}): reinstall") from err
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(packed)), mode="r") as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    members[member.name] = handle.read()
    except (lzma.LZMAError, EOFError, tarfile.TarError) as err:
        what = "tar archive" if isinstance(err, tarfile.TarError) else "xz file"
        reason = (str(err).splitlines() or [type(err).__name__])[0].rstrip(":")
        raise _damaged(f"{ARCHIVE} is not a whole {what}: {reason}") from err
    return members


def _damaged(what: str) -> ReprogramError:
    return ReprogramError(f"the packaged descriptions are damaged ({what}): reinstall")


def packaged_json(name: str) -> dict:
    """A packaged file's JSON content (``causes/dtd_cse_1.json`` or ``packaged:…``)."""
    try:
        return json.loads(packaged_bytes(name))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _damaged(f"{name.removeprefix(PREFIX)} is not valid JSON") from err


def packaged_files() -> list[PackagedFile]:
    """Every packaged description file, in archive order."""
    found = []
    for name in _members():
        match = _NAME.match(name)
        if match:
            number = int(match["number"]) if match["number"] else None
            found.append(
                PackagedFile(name, match["key"], match["kind"], number, match["source"] or "")
            )
    return found


def packaged_bytes(name: str) -> bytes:
    """The exact bytes of a packaged file (``causes/dtd_cse_1.json`` or ``packaged:…``)."""
    name = name.removeprefix(PREFIX)
    members = _members()
    if name not in members:
        raise ReprogramError(
            f"no packaged description file '{name}' (see: reprogram descriptions list)"
        )
    return members[name]


def packaged_descriptions(key: str, kind: str, source: str = "") -> dict[str, list[str]]:
    """A packaged set as a dict, e.g. ``("imagenet", "des")``."""
    return packaged_json(_file_name(key, kind, None, source))


def _file_name(key: str, kind: str, number: int | None, source: str) -> str:
    folder = f"attributes-other-llms/{source}" if source else "attributes"
    if kind in ("cse", "csl"):
        return f"causes/{key}_{kind}_{number}.json"
    return f"{folder}/{key}_{kind}.json"


def _cause_file(key: str, number: int) -> str:
    for kind in ("cse", "csl"):  # causes 1-3 are cse, the extra ones (4-7) csl
        name = _file_name(key, kind, number, "")
        if name in _members():
            return name
    have = sorted(f.number for f in packaged_files() if f.key == key and f.number)
    raise ReprogramError(
        f"no packaged cause {number} for '{key}' (packaged causes: "
        f"{', '.join(map(str, have)) or 'none'}); pass --descriptions FILE …"
    )


def _check_source(source: str) -> None:
    if source and source not in SOURCES:
        raise ReprogramError(
            f"unknown description source '{source}' (packaged: {', '.join(SOURCES)})"
        )


def published_cause_specs(key: str, causes: list[int] | None = None, source: str = "") -> list[str]:
    """``packaged:`` cause files of published dataset ``key`` (DVP-cse: causes 1-3 or ``causes``).

    ``source`` is refused: AttrVR's other LLMs wrote attribute sets only.
    """
    _check_source(source)
    if source:
        raise ReprogramError(
            "--description-source applies to attribute sets (dvp-cls, attrvr), not to causes"
        )
    return [PREFIX + _cause_file(key, n) for n in causes or PAPER_CAUSES]


def published_attribute_specs(key: str, kinds: Sequence[str], source: str = "") -> list[str]:
    """``packaged:`` attribute files of ``key``, one per kind (``des``, ``dist``); ``source``
    picks one of AttrVR's other LLMs."""
    _check_source(source)
    names = [_file_name(key, kind, None, source) for kind in kinds]
    missing = [n for n in names if n not in _members()]
    if missing:
        where = sorted({f.key for f in packaged_files() if f.source == source})
        raise ReprogramError(
            f"no packaged {missing[0]}"
            + (f" (source '{source}' exists for: {', '.join(where)})" if source else "")
            + "; pass --descriptions FILE …"
        )
    return [PREFIX + n for n in names]


def materialize(spec: str | Path) -> Path:
    """A real path for ``spec``: ``packaged:NAME`` is extracted once into the cache."""
    text = str(spec)
    if not text.startswith(PREFIX):
        return Path(spec)
    data = packaged_bytes(text)
    if text.endswith(".json"):
        packaged_json(text)  # a damaged member is named here, not as the cache file
    digest = hashlib.sha256(data).hexdigest()
    base = Cache.default().folder("descriptions")
    if base is None:
        raise ReprogramError("no cache folder for the packaged descriptions: set REPROGRAM_CACHE")
    path = base / digest[:16] / text.removeprefix(PREFIX)
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def file_record(spec: str | Path) -> dict[str, str | None]:
    """``{name, sha256}`` of a description file a run used (sha256 None if it is gone since)."""
    text = str(spec)
    try:
        data = packaged_bytes(text) if text.startswith(PREFIX) else Path(spec).read_bytes()
    except (OSError, ReprogramError):
        return {"name": text, "sha256": None}
    return {"name": text, "sha256": hashlib.sha256(data).hexdigest()}


def listing(key: str | None = None) -> dict[str, list[PackagedFile]]:
    """Packaged files per dataset key (optionally one key)."""
    table: dict[str, list[PackagedFile]] = {}
    for item in packaged_files():
        if key is None or item.key == key:
            table.setdefault(item.key, []).append(item)
    return table


def _key_for(dataset: str) -> str:
    from reprogram.data.catalog import dataset_info, is_published

    keys = {f.key for f in packaged_files()}
    if dataset in keys:
        return dataset
    if is_published(dataset):
        return dataset_info(dataset).description_key
    raise ReprogramError(f"no packaged descriptions for '{dataset}' (packaged: {', '.join(keys)})")


def _numbers(items: list[PackagedFile], kind: str) -> str:
    numbers = sorted(f.number for f in items if f.kind == kind and f.number)
    if not numbers:
        return ""
    contiguous = numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2
    return f"{numbers[0]}-{numbers[-1]}" if contiguous else ",".join(map(str, numbers))


def summary_lines(dataset: str | None = None) -> list[str]:
    """What ``reprogram descriptions list`` prints: per dataset, or one dataset's files."""
    if dataset is None:
        lines = []
        for key, items in listing().items():
            parts = []
            cse, csl = _numbers(items, "cse"), _numbers(items, "csl")
            if cse or csl:
                parts.append("causes " + ", ".join(n for n in (cse, csl) if n))
            own = sorted({f.kind for f in items if not f.source and f.kind in ("des", "dist")})
            if own:
                parts.append("attributes " + "+".join(own))
            sources = sorted({f.source for f in items if f.source})
            if sources:
                parts.append("other LLMs " + ", ".join(sources))
            lines.append(f"{key:<16}{'; '.join(parts)}")
        return lines + ["(reprogram descriptions list --dataset NAME: the files, their classes)"]
    key = _key_for(dataset)
    causes = _published_causes(key)
    lines = []
    for item in listing(key).get(key, []):
        data = packaged_bytes(item.name)
        content = packaged_json(item.name)
        sentences = sum(len(v) for v in content.values()) / max(1, len(content))
        sha = hashlib.sha256(data).hexdigest()[:12]
        cause = causes[item.number - 1] if item.number and item.number <= len(causes) else ""
        lines.append(
            f"{item.spec:<62}{len(content):>5} classes {sentences:5.1f} sentences/class  "
            f"sha256 {sha}" + (f"  cause: {cause}" if cause else "")
        )
    return lines


def _published_causes(key: str) -> tuple[str, ...]:
    from reprogram.data.catalog import DATASETS

    return next((i.causes for i in DATASETS.values() if i.description_key == key), ())
