"""Data-parallel training (torchrun, 2 CPU processes, gloo) equals single-process training.

The multi-process runs are forked from the test process (``helpers.fork_world``: torchrun's
environment, the imports done); one test checks that the real ``torchrun`` gives that
environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import (
    assert_same_run,
    cli,
    exit_codes,
    fork_world,
    make_folder_dataset,
    quick_config,
    running,
)

from reprogram.data import load_dataset
from reprogram.data.images import decode_center
from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.evaluate import predict_logits
from reprogram.engine.runs import load_run
from reprogram.engine.train import fit

pytestmark = [
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with gloo is needed",
    ),
    pytest.mark.slow,
]

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


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", f"folder:{data}", *CLI, "--out", str(out), *extra]


JOIN = """
import json, sys
import torch
from reprogram.engine.distributed import close_world, init_world

world = init_world("cpu")
total = world.all_reduce_sum(torch.tensor([world.rank + 1.0]))
said = world.broadcast_object({"rank": world.rank})
print(json.dumps({"rank": world.rank, "size": world.size, "sum": total.item(), "said": said}))
close_world()
"""


def test_torchrun_starts_a_world_reprogram_joins(tmp_path):
    """The real launcher: its environment is the one ``helpers.fork_world`` gives the others."""
    script = tmp_path / "join.py"
    script.write_text(JOIN)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*command, "--nproc_per_node", "2", "--tee", "1", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line.partition("]:")[2]) for line in sorted(done.stdout.splitlines())]
    assert rows == [{"rank": rank, "size": 2, "sum": 3.0, "said": {"rank": 0}} for rank in (0, 1)]


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> tuple[Path, Path, list[str], dict]:
    """The data, an uninterrupted 2-process run (folder, each process's standard output) and
    the same run in this process (its results), shared by the tests."""
    folder = tmp_path_factory.mktemp("distributed")
    data = make_folder_dataset(folder / "data", counts=(("train", 5), ("val", 2), ("test", 3)))
    # one intra-op thread here and in the workers, as torchrun gives (tests/conftest.py)
    single = fit(quick_config(data, "dvp-cse", **SETTINGS), folder / "single")  # imports, too
    workers = fork_world(2, lambda: cli(*train_args(data, folder / "multi")), folder / "out")
    assert exit_codes(workers) == [0, 0]
    outputs = [(folder / f"out.{rank}").read_text() for rank in (0, 1)]
    return data, folder / "multi", outputs, single


def test_two_processes_train_like_one(multi):
    data, multi_run, stdout, single = multi
    single_run = multi_run.with_name("single")
    # every process ends cleanly; only rank 0 prints
    assert stdout[0].count("dvp-cse  val_accuracy") == 1 and stdout[1] == ""

    a, b = load_checkpoint(single_run), load_checkpoint(multi_run)
    assert a["history"][0]["estimate_only"] and not a["history"][-1]["estimate_only"]
    for key in ("prompts.theta", "aggregator.prm.weights"):
        torch.testing.assert_close(b["state"][key], a["state"][key], rtol=0, atol=1e-5)
    assert not torch.equal(
        a["state"]["prompts.theta"], torch.zeros_like(a["state"]["prompts.theta"])
    )
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b["loss"] == pytest.approx(row_a["loss"], abs=1e-5)
        assert row_b["train_acc"] == row_a["train_acc"]

    run_a, run_b = load_run(single_run), load_run(multi_run)
    images = decode_center(load_dataset(f"folder:{data}", None).test, run_a.model.image_size)
    logits_a = predict_logits(run_a.model, images, 16, torch.float32)
    logits_b = predict_logits(run_b.model, images, 16, torch.float32)
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-4)
    assert single["test_accuracy"] == pytest.approx(
        float((logits_a.argmax(1) == images.labels).float().mean())
    )


def _sharded_eval(data: Path, out: Path, batches: tuple[int, ...]) -> int:
    """One process's part of the sharded evaluation: its results in ``out.BATCH.RANK.json``."""
    from reprogram.engine.distributed import close_world, init_world
    from reprogram.engine.evaluate import evaluate
    from reprogram.engine.setup import prepare

    world = init_world("cpu")
    model = prepare(quick_config(data, "dvp-cse", shots=2)).model
    with torch.no_grad():
        model.prompts.theta.normal_(generator=torch.Generator().manual_seed(0))
    images = decode_center(load_dataset(f"folder:{data}", None).test, model.image_size)
    for batch in batches:
        result = evaluate(model, images, batch, torch.float32, world=world)
        numbers = {
            "accuracy": result.accuracy,
            "per_class": result.per_class,
            "confusion": result.confusion.tolist(),
            "count": result.count,
        }
        out.with_name(f"{out.name}.{batch}.{world.rank}.json").write_text(json.dumps(numbers))
    close_world()
    return 0


PROCESSES, BATCHES = 2, (2, 8, 16)


def test_sharded_evaluation_equals_one_process(tmp_path, multi):
    """11 test images sharded in whole batches over 2 gloo processes (batches of 2 and 8: uneven
    shards; of 16: one process has none): every process gets the numbers of one process."""
    import json

    from reprogram.engine.distributed import World
    from reprogram.engine.evaluate import evaluate, shard_range
    from reprogram.engine.setup import prepare

    data = make_folder_dataset(tmp_path / "data", counts=(("train", 2), ("val", 1), ("test", 4)))
    (data / "test" / "red disc" / "0.png").unlink()  # 11 images
    workers = fork_world(PROCESSES, lambda: _sharded_eval(data, tmp_path / "out", BATCHES))
    # meanwhile, in this process: one process's numbers, and the shards they will be cut into
    model = prepare(quick_config(data, "dvp-cse", shots=2)).model
    with torch.no_grad():
        model.prompts.theta.normal_(generator=torch.Generator().manual_seed(0))
    images = decode_center(load_dataset(f"folder:{data}", None).test, model.image_size)
    alone = {batch: evaluate(model, images, batch, torch.float32) for batch in BATCHES}
    assert all(a.count == 11 and 0 < a.accuracy < 1 for a in alone.values())  # can go wrong
    for processes in (2, 3, 4):
        for batch in BATCHES:
            shards = [shard_range(11, batch, World(rank, processes)) for rank in range(processes)]
            assert shards[0][0] == 0 and shards[-1][1] == 11
            assert all(a[1] == b[0] for a, b in zip(shards, shards[1:], strict=False))
    sizes = {
        b: [stop - start for start, stop in (shard_range(11, b, World(r, 2)) for r in range(2))]
        for b in BATCHES
    }
    assert sizes == {2: [6, 5], 8: [8, 3], 16: [11, 0]}

    assert exit_codes(workers) == [0] * PROCESSES
    for batch in BATCHES:
        for rank in range(PROCESSES):
            got = json.loads((tmp_path / f"out.{batch}.{rank}.json").read_text())
            assert got["count"] == 11 and got["accuracy"] == alone[batch].accuracy
            assert got["per_class"] == alone[batch].per_class
            assert got["confusion"] == alone[batch].confusion.tolist()


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path, multi):
    data, straight, _, _ = multi
    killed = tmp_path / "killed"
    workers = fork_world(2, lambda: cli(*train_args(data, killed)))
    metrics, deadline = killed / "metrics.jsonl", time.time() + 240
    while time.time() < deadline and all(running(pid) for pid in workers):
        checkpointed = (killed / "checkpoint.pt").is_file() and metrics.is_file()
        if checkpointed and len(metrics.read_text().splitlines()) >= 2:
            for pid in workers:  # both at once, as a killed job's processes die
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    codes = exit_codes(workers)
    assert -signal.SIGKILL in codes and 0 not in codes, f"not killed in time: exits {codes}"
    assert not (killed / "results.json").exists()
    assert 0 < load_checkpoint(killed)["epoch"] < 6

    resumed = fork_world(2, lambda: cli(*train_args(data, killed, "--resume")))
    assert exit_codes(resumed) == [0, 0]
    assert_same_run(killed, straight, epochs=6)
    assert [row["epoch"] for row in load_checkpoint(killed)["history"]] == list(range(1, 7))
