"""Data-parallel training (torchrun, 2 CPU processes, gloo) equals single-process training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
SETTINGS = dict(epochs=6, batch_size=7, shots=0, eval_every=2, device="cpu", m=5)
CLI = [
    "--method",
    "dvp-cse",
    "--backbone",
    "random:tiny",
    "--epochs",
    "6",
    "--batch-size",
    "7",
    "--shots",
    "0",
    "--eval-every",
    "2",
    "--device",
    "cpu",
    "--set",
    "m=5",
    "--set",
    "deterministic=true",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as torchrun gives each process (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchrun(folder: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """``reprogram train`` in 2 processes under torchrun."""
    script = folder / "reprogram_cli.py"  # the ``reprogram`` command, runnable by torchrun
    script.write_text("from reprogram.cli import main\n\nmain()\n")
    return [
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
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> tuple[Path, Path, str]:
    """The data and an uninterrupted 2-process run (folder, stdout), shared by the tests."""
    folder = tmp_path_factory.mktemp("distributed")
    data = make_folder_dataset(folder / "data", counts=(("train", 5), ("val", 2), ("test", 3)))
    done = subprocess.run(
        torchrun(folder, data, folder / "multi"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return data, folder / "multi", done.stdout


def test_two_processes_train_like_one(tmp_path, multi):
    data, multi_run, stdout = multi
    single = fit(quick_config(data, "dvp-cse", **SETTINGS), tmp_path / "single")
    # every process ends cleanly; only rank 0 prints
    assert stdout.count("dvp-cse  val_accuracy") == 1

    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(multi_run)
    assert a["history"][0]["estimate_only"] and not a["history"][-1]["estimate_only"]
    for key in ("prompts.theta", "aggregator.prm.weights"):
        torch.testing.assert_close(b["state"][key], a["state"][key], rtol=0, atol=1e-5)
    assert not torch.equal(
        a["state"]["prompts.theta"], torch.zeros_like(a["state"]["prompts.theta"])
    )
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b["loss"] == pytest.approx(row_a["loss"], abs=1e-5)
        assert row_b["train_acc"] == row_a["train_acc"]

    run_a, run_b = load_run(tmp_path / "single"), load_run(multi_run)
    images = decode_center(load_dataset(f"folder:{data}", None).test, run_a.model.image_size)
    logits_a = predict_logits(run_a.model, images, 16, torch.float32)
    logits_b = predict_logits(run_b.model, images, 16, torch.float32)
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-4)
    assert single["test_accuracy"] == pytest.approx(
        float((logits_a.argmax(1) == images.labels).float().mean())
    )


SHARDED_EVAL = """
import json, sys
from pathlib import Path
import torch
from helpers import quick_config
from reprogram.data import load_dataset
from reprogram.data.images import decode_center
from reprogram.engine.distributed import init_world
from reprogram.engine.evaluate import evaluate
from reprogram.engine.setup import prepare

torch.set_num_threads(1)
data, batch, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
world = init_world("cpu")
model = prepare(quick_config(data, "dvp-cse", shots=2)).model
with torch.no_grad():
    model.prompts.theta.normal_(generator=torch.Generator().manual_seed(0))
images = decode_center(load_dataset(f"folder:{data}", None).test, model.image_size)
result = evaluate(model, images, batch, torch.float32, world=world)
Path(f"{out}.{world.rank}.json").write_text(json.dumps({
    "accuracy": result.accuracy, "per_class": result.per_class,
    "confusion": result.confusion.tolist(), "count": result.count,
}))
"""


@pytest.mark.parametrize("processes,batch", [(2, 2), (3, 4)])
def test_sharded_evaluation_equals_one_process(tmp_path, processes, batch):
    """11 test images sharded in whole batches over 2 or 3 gloo processes (uneven shards; with
    batches of 4 among 3 processes one shard is short): every process gets the numbers of one."""
    import json
    import os
    from pathlib import Path

    from reprogram.engine.distributed import World
    from reprogram.engine.evaluate import evaluate, shard_range
    from reprogram.engine.setup import prepare

    data = make_folder_dataset(tmp_path / "data", counts=(("train", 2), ("val", 1), ("test", 4)))
    (data / "test" / "red disc" / "0.png").unlink()  # 11 images
    model = prepare(quick_config(data, "dvp-cse", shots=2)).model
    with torch.no_grad():
        model.prompts.theta.normal_(generator=torch.Generator().manual_seed(0))
    images = decode_center(load_dataset(f"folder:{data}", None).test, model.image_size)
    alone = evaluate(model, images, batch, torch.float32)
    assert alone.count == 11 and 0 < alone.accuracy < 1  # a result the shards can get wrong

    shards = [shard_range(11, batch, World(rank, processes)) for rank in range(processes)]
    assert shards[0][0] == 0 and shards[-1][1] == 11
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:], strict=False))
    assert len({stop - start for start, stop in shards}) > 1  # uneven

    script = tmp_path / "sharded_eval.py"
    script.write_text(SHARDED_EVAL)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(processes), str(script), str(data), str(batch),
        str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in range(processes):
        got = json.loads((tmp_path / f"out.{rank}.json").read_text())
        assert got["count"] == 11 and got["accuracy"] == alone.accuracy
        assert got["per_class"] == alone.per_class
        assert got["confusion"] == alone.confusion.tolist()


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path, multi):
    import json
    import os
    import signal
    import time

    data, straight, _ = multi
    killed = tmp_path / "killed"
    # its own session: SIGKILL reaches torchrun and both workers at once
    process = subprocess.Popen(
        torchrun(tmp_path, data, killed),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics, deadline = killed / "metrics.jsonl", time.time() + 240
    while time.time() < deadline and process.poll() is None:
        checkpointed = (killed / "checkpoint.pt").is_file() and metrics.is_file()
        if checkpointed and len(metrics.read_text().splitlines()) >= 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "results.json").exists()
    assert 0 < load_checkpoint(killed)["epoch"] < 6

    resumed = subprocess.run(
        torchrun(tmp_path, data, killed, "--resume"), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (killed, straight))
    for key in ("test_accuracy", "val_accuracy", "per_class_accuracy", "selected_epoch"):
        assert a[key] == b[key], key
    state_a, state_b = load_checkpoint(killed)["state"], load_checkpoint(straight)["state"]
    for key in state_b:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)
    assert [row["epoch"] for row in load_checkpoint(killed)["history"]] == list(range(1, 7))
