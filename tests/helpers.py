"""Small builders shared by tests: image folders with descriptions, quick configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("red disc", "green square", "blue stripes")
CAUSES = ("shape", "colour", "texture")


def sentences(prefix: str, name: str, count: int = 22) -> list[str]:
    return [f"{prefix} description {j} of the {name} in some words" for j in range(count)]


def make_folder_dataset(
    root: Path,
    classes=CLASSES,
    counts=(("train", 6), ("val", 3), ("test", 4)),
    size=(40, 52),
    seed: int = 0,
) -> Path:
    """PNG images in ``root/{train,val,test}/<class>/`` plus ``root/descriptions/*.json``."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 90, (*size, 3))
                image[..., index % 3] += 150
                Image.fromarray(image.astype(np.uint8)).save(folder / f"{i}.png")
    folder = root / "descriptions"
    folder.mkdir(exist_ok=True)
    for key, prefix in [
        ("cse_1", CAUSES[0]),
        ("cse_2", CAUSES[1]),
        ("cse_3", CAUSES[2]),
        ("des", "looks"),
        ("dist", "differs"),
    ]:
        data = {name: sentences(prefix, name) for name in classes}
        (folder / f"{key}.json").write_text(json.dumps(data))
    return root


def quick_config(dataset: Path, method: str, **overrides):
    from reprogram.engine.config import load_config

    values = dict(
        method=method,
        dataset=f"folder:{dataset}",
        backbone="random:tiny",
        epochs=2,
        shots=4,
        batch_size=4,
        quiet=True,
        m=5,
    )
    values.update(overrides)
    return load_config(None, values)


def cli(*args: str) -> int:
    """Run the ``reprogram`` command in this process; return its exit code."""
    from reprogram.cli import main

    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def describe_app():
    """A Typer app with only the ``describe`` and ``descriptions`` commands."""
    import typer

    from reprogram.cli import describe, descriptions

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    describe.register(app)
    descriptions.register(app)
    return app


def tiny_hf_clip_config(
    *, width: int, layers: int, image_size: int, projection_dim: int, **text_config
):
    """A small ``transformers.CLIPConfig``: both towers ``width`` wide (MLP 2x), 2 heads, 8-px
    patches; ``text_config`` adds the text tower's vocabulary, context and token ids."""
    import transformers

    tower = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
    }
    return transformers.CLIPConfig(
        text_config={**tower, **text_config},
        vision_config={**tower, "image_size": image_size, "patch_size": 8},
        projection_dim=projection_dim,
    )


def assert_same_run(resumed: Path, straight: Path, epochs: int) -> None:
    """A resumed run folder equals an uninterrupted one: results, every saved tensor (exactly),
    and one metrics row per epoch."""
    import torch

    from reprogram.engine.checkpoint import load_checkpoint

    a, b = (json.loads((run / "results.json").read_text()) for run in (resumed, straight))
    for key in ("test_accuracy", "val_accuracy", "per_class_accuracy", "selected_epoch"):
        assert a[key] == b[key], key
    state_a, state_b = load_checkpoint(resumed)["state"], load_checkpoint(straight)["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_b:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0)
    rows = (resumed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == list(range(1, epochs + 1))


# The tiny CLIP the Hugging Face tests save: OpenAI's vocabulary and context (so the offline
# tokenizer's ids fit), 56-px images in 8-px patches, 24-dim features.
TINY_HF_CLIP = {
    "width": 32,
    "layers": 2,
    "image_size": 56,
    "projection_dim": 24,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "eos_token_id": 49407,
}


def fork(target, *, env: dict[str, str] | None = None, stdout: Path | None = None) -> int:
    """Run ``target()`` (its return value: the exit code) in a forked copy of this process,
    which has its imports done already; return the child's pid. ``env`` is added to the child's
    environment, ``stdout`` receives its standard output."""
    import os
    import sys
    import traceback

    child = os.fork()
    if child:
        return child
    code = 1
    try:
        os.environ.update(env or {})
        if stdout is not None:
            sys.stdout = open(stdout, "w")  # noqa: SIM115  (flushed below, before _exit)
        code = target()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_world(size: int, target, stdout: Path | None = None) -> list[int]:
    """``target()`` in ``size`` forked processes with the environment torchrun gives its workers
    (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); each one's
    standard output in ``stdout.RANK`` if given. The workers' pids."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        fork(
            target,
            env={
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(size),
                "LOCAL_WORLD_SIZE": str(size),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stdout=None if stdout is None else stdout.with_name(f"{stdout.name}.{rank}"),
        )
        for rank in range(size)
    ]


def exit_codes(pids: list[int]) -> list[int]:
    """Wait for forked processes; their exit codes (-9: killed by SIGKILL)."""
    import os

    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def running(pid: int) -> bool:
    """Whether a forked child is still running (an ended one stays waitable)."""
    import os

    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def kill_when(
    child: int,
    ready,
    seconds: float = 120,
    poll: float = 0.01,
    failure: str = "the run ended before it could be killed",
) -> None:
    """SIGKILL the forked ``child`` as soon as ``ready()``; fail the test (``failure``) if it
    ends or ``seconds`` pass first. Asserts that it died of the SIGKILL."""
    import os
    import signal
    import time

    import pytest

    deadline = time.time() + seconds
    while time.time() < deadline and running(child):
        if ready():
            os.kill(child, signal.SIGKILL)
            break
        time.sleep(poll)
    else:
        pytest.fail(failure)
    assert exit_codes([child]) == [-signal.SIGKILL]


def epochs_checkpointed(run: Path, epochs: int) -> bool:
    """Whether ``run`` holds a checkpoint and ``epochs`` epochs' metrics lines."""
    metrics = run / "metrics.jsonl"
    checkpointed = (run / "checkpoint.pt").is_file() and metrics.is_file()
    return checkpointed and len(metrics.read_text().splitlines()) >= epochs
