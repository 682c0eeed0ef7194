#!/usr/bin/env python3
"""Rebuild the packaged description archive from a folder in the published layout.

    python scripts/pack-descriptions.py ../shared/descriptions

writes ``src/reprogram/assets/descriptions/descriptions.tar.xz``: every ``*.json`` below the
folder (exact bytes, so their sha256 matches the upstream files), the licence notices and the
README. The archive is reproducible: sorted members, fixed times and owners, xz preset 9e.
"""

from __future__ import annotations

import argparse
import io
import lzma
import tarfile
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parents[1] / "src/reprogram/assets/descriptions"
NAME = "descriptions.tar.xz"
EXTRA = ("README.md", "LICENSE-upstream", "LICENSE-upstream-attrvr")


def members(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.rglob("*.json") if p.is_file())
    missing = [name for name in EXTRA if not (folder / name).is_file()]
    if not found or missing:
        raise SystemExit(f"{folder}: no *.json files or missing {', '.join(missing)}")
    return [folder / name for name in EXTRA] + found


def pack(folder: Path, out: Path) -> int:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in members(folder):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    packed = lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(packed)
    return len(packed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="descriptions folder (published layout)")
    parser.add_argument("--out", type=Path, default=ARCHIVE / NAME)
    args = parser.parse_args()
    size = pack(args.folder, args.out)
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
