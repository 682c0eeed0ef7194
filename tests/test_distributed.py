"""Data-parallel training (torchrun, 2 CPU processes, gloo) equals single-process training."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from helpers import make_folder_dataset, quick_config

from reprogram.data import load_dataset
from reprogram.data.images import decode_center
from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.evaluate import predict_logits
from reprogram.engine.runs import load_run
from reprogram.engine.train import fit

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is needed",
)

# 15 training images in batches of 7: the last batch (1 image) leaves the second process nothing.
SETTINGS = dict(epochs=3, batch_size=7, shots=0, eval_every=3, device="cpu", m=5)
CLI = [
    "--method",
    "dvp-cse",
    "--backbone",
    "random:tiny",
    "--epochs",
    "3",
    "--batch-size",
    "7",
    "--shots",
    "0",
    "--eval-every",
    "3",
    "--device",
    "cpu",
    "--set",
    "m=5",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as torchrun gives each process (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_train_like_one(tmp_path):
    data = make_folder_dataset(tmp_path / "data", counts=(("train", 5), ("val", 2), ("test", 3)))
    single = fit(quick_config(data, "dvp-cse", **SETTINGS), tmp_path / "single")

    script = tmp_path / "reprogram_cli.py"  # the ``reprogram`` command, runnable by torchrun
    script.write_text("from reprogram.cli import main\n\nmain()\n")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        "train",
        "--dataset",
        f"folder:{data}",
        *CLI,
        "--out",
        str(tmp_path / "multi"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # every process ends cleanly; only rank 0 prints
    assert done.stdout.count("dvp-cse  val_accuracy") == 1

    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "multi")
    assert a["history"][0]["estimate_only"] and not a["history"][-1]["estimate_only"]
    for key in ("prompts.theta", "aggregator.prm.weights"):
        torch.testing.assert_close(b["state"][key], a["state"][key], rtol=0, atol=1e-5)
    assert not torch.equal(
        a["state"]["prompts.theta"], torch.zeros_like(a["state"]["prompts.theta"])
    )
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b["loss"] == pytest.approx(row_a["loss"], abs=1e-5)
        assert row_b["train_acc"] == row_a["train_acc"]

    run_a, run_b = load_run(tmp_path / "single"), load_run(tmp_path / "multi")
    images = decode_center(load_dataset(f"folder:{data}", None).test, run_a.model.image_size)
    logits_a = predict_logits(run_a.model, images, 16, torch.float32)
    logits_b = predict_logits(run_b.model, images, 16, torch.float32)
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-4)
    assert single["test_accuracy"] == pytest.approx(
        float((logits_a.argmax(1) == images.labels).float().mean())
    )
