"""Adding a method from outside the package, exactly as the README's "How to add a method" says.

The registration below is the README snippet verbatim (only indented into a fixture); keep the
two in sync. The method is then trained like a built-in one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import make_folder_dataset, quick_config

from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.runs import load_run
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.model.recipes import get_recipe, list_methods, unregister_method


@pytest.fixture
def dvp_mean():
    # --- README "How to add a method", verbatim ---
    from reprogram.model.parts import BY_FILE, CAUSES, MEAN, PADDING
    from reprogram.model.recipes import Recipe, register_method

    register_method(
        Recipe(
            name="dvp-mean",
            prompt=PADDING,  # a padding prompt per group of texts
            texts=CAUSES,  # one description file per cause (cse_1.json, cse_2.json, …)
            grouping=BY_FILE,  # each cause's descriptions scored by its own prompt
            aggregation=MEAN,  # the plain mean instead of the PRM: no estimation epoch
            summary="DVP-cse without the PRM: the mean of each class's description scores.",
        )
    )
    # --- end of the README snippet ---
    yield "dvp-mean"
    unregister_method("dvp-mean")


def test_a_method_registered_from_outside_trains_like_a_built_in_one(tmp_path: Path, dvp_mean):
    assert dvp_mean in list_methods()
    dataset = make_folder_dataset(tmp_path / "data")
    run = tmp_path / "run"
    results = fit(quick_config(dataset, dvp_mean, epochs=2), run)
    for name in ("config.yaml", "results.json", "checkpoint.pt", "metrics.jsonl"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["method"] == dvp_mean and on_disk["prompts"] == 3
    assert on_disk["test_count"] == 12 and 0.0 <= on_disk["test_accuracy"] <= 1.0
    # the mean needs no estimation epoch: both epochs train (dvp-cse's first only estimates)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and not any(r["estimate_only"] for r in rows)
    assert not any(key.startswith("aggregator.") for key in load_checkpoint(run)["state"])
    # the run loads back, and its logits are the mean of its description scores
    loaded = load_run(run, device="cpu")
    assert loaded.model.recipe is get_recipe(dvp_mean)
    assert loaded.model.bank.group_names == ["cse_1", "cse_2", "cse_3"]
    images = torch.rand(2, 3, loaded.model.image_size, loaded.model.image_size)
    with torch.no_grad():
        output = loaded.model(images)
    assert torch.allclose(output.logits, output.scores.mean(-1))


def test_unregistered_methods_are_unknown_again(dvp_mean):
    unregister_method(dvp_mean)
    assert dvp_mean not in list_methods()
    with pytest.raises(ReprogramError, match="unknown method 'dvp-mean'"):
        get_recipe(dvp_mean)


def test_the_fixture_is_the_readme_snippet_verbatim():
    import inspect
    import textwrap

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How to add a method", 1)[1].split("```python\n", 1)[1]
    registration = section.split("\nfrom reprogram.engine", 1)[0]
    source = inspect.getsource(getattr(dvp_mean, "__wrapped__", dvp_mean))
    block = source.split("# --- README \"How to add a method\", verbatim ---\n", 1)[1]
    block = textwrap.dedent(block.split("    # --- end of the README snippet ---", 1)[0])
    assert block.strip() == registration.strip()
