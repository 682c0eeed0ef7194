"""Storage: atomic writes (umask, fsync, no stale temporary files), checkpoints (safe loading,
previous checkpoint, full disk), caches (versioned keys, damaged entries, unusable folder),
the run-folder lock, and damaged run files given to compare/explain."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, exit_codes, fork, make_folder_dataset, quick_config

from reprogram.engine import checkpoint as ckpt
from reprogram.engine.lock import RunLock
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.storage import files as io


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("storage") / "data")


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("storage-run") / "run"
    old = os.umask(0o022)
    try:
        fit(quick_config(dataset, "vp", epochs=2), run)
    finally:
        os.umask(old)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- atomic writes -------------------------------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        text = io.atomic_write_text(tmp_path / "a.txt", "x")
        tensor = io.atomic_torch_save(torch.ones(2), tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(text.stat().st_mode) == mode
    assert stat.S_IMODE(tensor.stat().st_mode) == mode


def test_every_file_of_a_run_is_0644_and_no_temporary_file_is_left(finished_run):
    names = sorted(p.name for p in finished_run.iterdir())
    assert not [n for n in names if n.endswith(io.TMP_SUFFIX) or n.endswith(".tmp")]
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "results.json", "metrics.jsonl"):
        assert stat.S_IMODE((finished_run / name).stat().st_mode) == 0o644, name


def test_atomic_write_fsyncs_the_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1]
    )
    io.atomic_write_text(tmp_path / "a.txt", "x")
    assert events[:2] == ["fsync", "replace"]
    assert events.count("fsync") == 2  # the file, then its folder


def test_a_killed_save_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    target = tmp_path / "checkpoint.pt"
    # what a kill -9 during torch.save leaves: a temporary file of a process that is gone

    def save_and_die() -> int:  # in the child: its torch.save kills it
        torch.save = lambda obj, path: os.kill(os.getpid(), signal.SIGKILL)
        io.atomic_torch_save(1, target)
        return 1

    assert exit_codes([fork(save_and_die)]) == [-signal.SIGKILL]
    stale = list(tmp_path.glob(f".checkpoint.pt.*{io.TMP_SUFFIX}"))
    assert len(stale) == 1 and not target.exists()
    alive = tmp_path / f".checkpoint.pt.{os.getppid()}.0000{io.TMP_SUFFIX}"  # a live writer's
    alive.write_text("")
    io.atomic_torch_save(torch.ones(1), target)
    assert not stale[0].exists() and alive.exists()
    assert torch.load(target, weights_only=True).tolist() == [1.0]


# -- checkpoints -------------------------------------------------------------------------------
def test_checkpoints_load_with_weights_only_and_keep_the_previous_one(finished_run):
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        data = torch.load(finished_run / name, map_location="cpu", weights_only=True)
        assert data["format"] == ckpt.FORMAT
    assert torch.load(finished_run / "checkpoint.pt", weights_only=True)["finished"] is True
    assert torch.load(finished_run / "checkpoint.prev.pt", weights_only=True)["epoch"] == 2
    assert "weights_only=False" not in Path(ckpt.__file__).read_text()


def test_rng_state_round_trips_through_plain_values():
    import random

    state = ckpt.rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    ckpt.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def _save_raw(path: Path, obj) -> None:
    torch.save(obj, path)


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:500])
    with pytest.warns(UserWarning, match="previous checkpoint"):
        data = ckpt.load_checkpoint(run)
    assert data["epoch"] == 2 and data["finished"] is False
    (run / "checkpoint.prev.pt").unlink()
    with pytest.raises(ReprogramError, match="cannot be resumed"):
        ckpt.load_checkpoint(run)


def test_resume_from_a_damaged_checkpoint_uses_the_previous_one(dataset, tmp_path):
    run = tmp_path / "run"
    config = quick_config(dataset, "vp", epochs=3)
    fit(config, run)
    reference = json.loads((run / "results.json").read_text())["test_accuracy"]
    partial = tmp_path / "partial"
    fit(quick_config(dataset, "vp", epochs=3), partial)
    (partial / "results.json").unlink()
    (partial / "checkpoint.pt").write_bytes(b"garbage")  # the prev one is at epoch 3, unfinished
    results = fit(config, partial, resume=True)
    assert results["test_accuracy"] == reference
    # a run warning: printed as a line and kept in results.json
    [note] = [w for w in results["warnings"] if "previous checkpoint" in w]
    assert "checkpoint.pt" in note and "(epoch 3)" in note


def _zip_of_no_checkpoint() -> bytes:
    import io as bytes_io
    import zipfile

    buffer = bytes_io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage", [b"", b"garbage", _zip_of_no_checkpoint()], ids=["empty", "garbage", "whole-zip"]
)
def test_a_damaged_checkpoint_never_replaces_the_good_previous_one(
    finished_run, dataset, tmp_path, damage
):
    run = _copy(finished_run, tmp_path)
    (run / "results.json").unlink()
    (run / "checkpoint.pt").write_bytes(damage)  # the previous one: epoch 2, unfinished
    fit(quick_config(dataset, "vp", epochs=2), run, resume=True)
    kept = torch.load(run / "checkpoint.prev.pt", weights_only=True)
    assert kept["epoch"] == 2 and kept["finished"] is False
    # both damaged: the message names both files, on one line
    (run / "checkpoint.pt").write_bytes(damage)
    (run / "checkpoint.prev.pt").write_bytes(b"")
    with pytest.raises(ReprogramError) as caught:
        ckpt.load_checkpoint(run)
    message = str(caught.value)
    assert f"{run / 'checkpoint.pt'}: damaged" in message and "\n" not in message
    assert f"{run / 'checkpoint.prev.pt'}: damaged" in message and "cannot be resumed" in message


def test_an_older_checkpoint_format_loads_or_says_so(finished_run, tmp_path):
    data = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    old = dict(data, format="reprogram-run/1", rng=dict(data["rng"], numpy=np.random.get_state()))
    _save_raw(tmp_path / "old.pt", old)
    loaded = ckpt.load_checkpoint(tmp_path / "old.pt")
    ckpt.set_rng_state(loaded["rng"])  # the numpy legacy tuple still restores
    _save_raw(tmp_path / "older.pt", dict(data, format="reprogram-run/0"))
    with pytest.raises(ReprogramError, match="format 'reprogram-run/0' is not one"):
        ckpt.load_checkpoint(tmp_path / "older.pt")


class Payload:
    """An object that must never be unpickled from a run folder."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/reprogram-should-not-exist",))


def test_a_checkpoint_holding_objects_is_never_unpickled(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with path.open("wb") as handle:
        pickle.dump({"format": ckpt.FORMAT, "x": Payload()}, handle, protocol=2)
    with pytest.raises(ReprogramError) as caught:
        ckpt.load_checkpoint(tmp_path)
    assert "weights_only" not in str(caught.value)
    assert not Path("/tmp/reprogram-should-not-exist").exists()


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def _torch_writer_error(cause: OSError | None) -> RuntimeError:
    """What torch's zip writer raises when a write fails (with the file's OSError as context when
    it writes to a Python file)."""
    text = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
    if cause is None:
        return RuntimeError(text)
    try:
        raise cause
    except OSError:
        try:
            raise RuntimeError(text)  # noqa: B904  (torch chains it implicitly, as here)
        except RuntimeError as err:
            return err


@pytest.mark.parametrize(
    ("failure", "free", "expected"),
    [
        (_enospc(), None, "no space left on device; the previous checkpoint (epoch 2) is intact"),
        (_torch_writer_error(_enospc()), None, "no space left on device; the previous"),
        (_torch_writer_error(None), 0, "no space left on device; the previous checkpoint"),
        (_torch_writer_error(None), 1 << 40, "torch could not write the file: [enforce fail"),
    ],
    ids=["oserror", "torch-writer", "torch-writer-full-fs", "torch-writer-other"],
)
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    finished_run, tmp_path, monkeypatch, failure, free, expected
):
    run = _copy(finished_run, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()

    def full(obj, handle):
        handle.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", full)
    if free is not None:
        monkeypatch.setattr(io, "_free_bytes", lambda folder: free)
    with pytest.raises(ReprogramError) as caught:
        ckpt.save_checkpoint(run, {"epoch": 3})
    message = str(caught.value)
    assert expected in message and "\n" not in message
    if "no space" in expected:
        assert "rerun with --resume" in message
    assert (run / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in finished_run.iterdir())


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root and mount; skipped where there is none)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("no small tmpfs here (needs root and mount)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_real_full_disk_while_saving_is_one_line(small_tmpfs):
    run = small_tmpfs / "run"
    run.mkdir()
    payload = {"state": {"x": torch.arange(40_000, dtype=torch.float32)}}  # 160 kB
    ckpt.save_checkpoint(run, {**payload, "epoch": 1})
    with pytest.raises(ReprogramError) as caught:
        ckpt.save_checkpoint(run, {**payload, "epoch": 2})
    message = str(caught.value)
    assert "no space left on device; the previous checkpoint (epoch 1) is intact" in message
    assert ckpt.load_checkpoint(run)["epoch"] == 1
    assert [p.name for p in run.iterdir()] == ["checkpoint.pt"]


# -- output folders ------------------------------------------------------------------------------
def test_out_that_is_a_file_is_one_line(dataset, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file")
    args = ["--dataset", f"folder:{dataset}", "--backbone", "random:tiny", "--epochs", "1"]
    assert cli("train", "--method", "zero-shot", *args, "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert "is an existing file, not a folder" in error and "Traceback" not in error
    assert out.read_text() == "a file"


def test_explain_out_that_is_a_file_is_one_line(finished_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file")
    assert cli("explain", str(finished_run), "--out", str(out)) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err


def test_a_read_only_out_is_one_line(tmp_path, monkeypatch):
    # tests run as root, whom chmod does not stop: simulate the file system's answer
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(ReprogramError, match=r"cannot create --out .*Read-only file system"):
        io.ensure_dir(tmp_path / "new", "--out")
    monkeypatch.undo()

    real_open = os.open

    def refuse(path, flags, *args):
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ReprogramError, match="Read-only file system") as caught:
        io.atomic_write_text(tmp_path / "ro" / "results.json", "{}")
    assert isinstance(caught.value, OSError)  # cache writers fall back on any OSError
    with pytest.raises(ReprogramError, match=r"cannot write into .*Read-only file system"):
        RunLock(tmp_path / "ro").acquire()


# -- the run-folder lock ----------------------------------------------------------------------
def test_a_second_run_into_the_same_out_fails_at_once(dataset, tmp_path):
    run = tmp_path / "run"
    with RunLock(run), pytest.raises(ReprogramError, match=f"is in use by pid {os.getpid()}"):
        fit(quick_config(dataset, "zero-shot"), run)
    assert not (run / "results.json").exists()
    fit(quick_config(dataset, "zero-shot"), run)  # released: the folder can be used
    assert (run / "results.json").is_file()


def test_the_lock_of_another_process_names_it_and_a_dead_ones_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}'.encode())\n"
            "print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ReprogramError, match=f"{run} is in use by pid {holder.pid}"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run) as lock:  # the dead process's lock is taken over
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        assert lock.path == run / ".lock"
    (run / ".lock").write_text(f"{_dead_pid()}\n")  # a stale pid in the file alone: no lock
    RunLock(run).acquire().release()


# -- caches -----------------------------------------------------------------------------------
def test_damaged_cache_entries_are_recomputed(dataset, tmp_path, monkeypatch):
    from reprogram.backbones import load_backbone
    from reprogram.data import few_shot, load_dataset
    from reprogram.data.images import decode_center

    cache = tmp_path / "cache"
    monkeypatch.setenv("REPROGRAM_CACHE", str(cache))
    splits = load_dataset(f"folder:{dataset}")
    drawn = few_shot(splits, 2, 1)
    images = decode_center(splits.test, 32)
    backbone = load_backbone("random:tiny")
    texts = ["a photo of a cat", "a photo of a dog"]
    features = backbone.encode_text(texts)
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert {p.suffix for p in entries} == {".json", ".npy", ".pt"}
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[: max(1, entry.stat().st_size // 3)])
    assert few_shot(splits, 2, 1).train == drawn.train
    assert torch.equal(decode_center(splits.test, 32).pixels, images.pixels)
    backbone.text_cache.hits = 0
    assert torch.equal(backbone.encode_text(texts), features)
    assert backbone.text_cache.hits == 0  # recomputed, not read from the damaged file
    assert torch.equal(backbone.encode_text(texts), features)
    assert backbone.text_cache.hits == 1  # and written again


def test_cache_keys_carry_the_version_of_what_made_them(dataset, monkeypatch):
    from reprogram.backbones import base
    from reprogram.data import fewshot, images, load_dataset

    splits = load_dataset(f"folder:{dataset}")
    image_key = images._cache_key(splits.test, 32, "center")
    shot_key = fewshot.few_shot_key(splits, 2, 1)
    text_path = base.TextFeatureCache()._path("abc", ["x"])
    monkeypatch.setattr(images, "DECODE_VERSION", images.DECODE_VERSION + 1)
    monkeypatch.setattr(fewshot, "CACHE_VERSION", fewshot.CACHE_VERSION + 1)
    monkeypatch.setattr(base, "TEXT_CACHE_VERSION", base.TEXT_CACHE_VERSION + 1)
    assert images._cache_key(splits.test, 32, "center") != image_key
    assert fewshot.few_shot_key(splits, 2, 1) != shot_key
    assert base.TextFeatureCache()._path("abc", ["x"]) != text_path
    assert "open_clip_torch=" in base._library_versions()


def test_an_activated_cache_is_the_default_and_the_environment_is_untouched(tmp_path, monkeypatch):
    from reprogram.storage.cache import Cache, cache_key

    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path / "env"))
    assert Cache.default().root == tmp_path / "env"
    before = dict(os.environ)
    with Cache(tmp_path / "mine").activate() as cache:
        assert Cache.default() is cache
        entry = cache.put_json("few-shot", "a.json", {"x": 1})
        assert entry == tmp_path / "mine" / "few-shot" / "a.json"
        assert cache.get_json("few-shot", "a.json") == {"x": 1}
        assert dict(os.environ) == before
    assert Cache.default().root == tmp_path / "env"
    entry.write_text("{not json")
    assert Cache(tmp_path / "mine").get_json("few-shot", "a.json") is None  # damaged: a miss
    assert Cache.disabled().put_json("few-shot", "a.json", {}) is None
    assert Cache.disabled().folder("images") is None
    assert cache_key(1, "a") != cache_key(2, "a") != cache_key(1, "a", "b")
    assert len(cache_key(1, "a")) == 32 and len(cache_key(1, "a", length=24)) == 24


def test_an_unusable_cache_folder_falls_back_to_no_cache(dataset, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("REPROGRAM_CACHE", str(not_a_folder))
    results = fit(quick_config(dataset, "vp", epochs=1), tmp_path / "run")
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert any("working without a cache" in w for w in results["warnings"])  # the run's own
    assert not_a_folder.read_text() == ""


# -- damaged run files ------------------------------------------------------------------------
def test_a_damaged_results_file_is_one_line_in_compare(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text[: len(text) // 2])
    assert cli("compare", str(run)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "results.json:" in error and "\n" not in error


def test_a_damaged_metrics_line_names_the_file_and_line(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReprogramError, match=r"metrics\.jsonl:2: damaged line"):
        ckpt.read_metrics(run / "metrics.jsonl")
    assert cli("explain", str(run), "--out", str(tmp_path / "report")) == 2
    assert "metrics.jsonl:2: damaged line" in capsys.readouterr().err


def test_describe_out_that_is_a_file_is_one_line(tmp_path):
    from reprogram.text.describe.generate import generate_descriptions

    out = tmp_path / "taken"
    out.write_text("a file")
    with pytest.raises(ReprogramError, match="is an existing file, not a folder"):
        generate_descriptions(["cat"], "pets", ["shape"], out, client=None)
    assert out.read_text() == "a file"
