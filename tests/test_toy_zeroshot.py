"""The committed toy CLIP: loads through the normal factory and has real zero-shot ability."""

import pytest

from reprogram.toy import load_pretrained, pretrained_weights_path
from reprogram.toy.tasks import generate_split, get_task
from reprogram.toy.zeroshot import heldout_accuracy, heldout_classnames, zeroshot_accuracy


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    import os

    old = os.environ.get("REPROGRAM_CACHE")
    os.environ["REPROGRAM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield load_pretrained()
    finally:
        if old is None:
            os.environ.pop("REPROGRAM_CACHE", None)
        else:
            os.environ["REPROGRAM_CACHE"] = old


def test_artifact_is_small():
    path = pretrained_weights_path()
    assert path.is_file() and path.stat().st_size <= 10_000_000


def test_heldout_pairs_zero_shot_at_least_80_percent(backbone):
    assert len(heldout_classnames()) == 30
    accuracy = heldout_accuracy(backbone, per_class=40)
    print(f"held-out zero-shot accuracy: {accuracy:.3f}")
    assert accuracy >= 0.80


@pytest.mark.parametrize("name", ["invert", "channels"])
def test_shifted_tasks_are_hard_zero_shot(backbone, name):
    images, labels = generate_split(name, "test", 10)
    accuracy = zeroshot_accuracy(backbone, images, labels, get_task(name).classnames)
    assert accuracy < 0.5
