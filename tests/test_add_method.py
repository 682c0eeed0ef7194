"""Adding a method from outside the package, exactly as the README's "How to add a method" says.

The registration below is the README snippet verbatim (only indented into a fixture); keep the
two in sync. The method is then trained like a built-in one, and the same recipe shipped as a
``reprogram.methods`` entry point (a temporary ``*.dist-info`` on ``sys.path``) trains from the
command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import CLASSES, cli, make_folder_dataset, quick_config, sentences

from reprogram.backbones import load_backbone
from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.runs import load_run
from reprogram.engine.train import fit
from reprogram.errors import ReprogramError
from reprogram.model import parts, recipes
from reprogram.model.methods import build_reprogrammer
from reprogram.model.recipes import Recipe, get_recipe, list_methods, unregister_method


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
            overrides={"m": 10},  # its own default: 10 descriptions per class and cause (not 20)
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
    assert get_recipe(dvp_mean).defaults()["m"] == 10  # its own default; the run gave m=5
    assert load_run(run, device="cpu").config.method.m == 5
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
    block = source.split('# --- README "How to add a method", verbatim ---\n', 1)[1]
    block = textwrap.dedent(block.split("    # --- end of the README snippet ---", 1)[0])
    assert block.strip() == registration.strip()


def _recipe(**overrides) -> Recipe:
    return Recipe("x", parts.PADDING, parts.CAUSES, parts.BY_FILE, parts.MEAN, "", overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mm": 3}, "method 'x': default 'mm' is no method option"),
        ({"prm_top_k": 1}, "method 'x': default 'prm_top_k' is read by none of its parts"),
        ({"m": "10"}, "method 'x': default m='10' must be of type int"),
        ({"m": True}, "method 'x': default m=True must be of type int"),
    ],
)
def test_a_recipe_refuses_defaults_it_cannot_use(overrides, message):
    with pytest.raises(ReprogramError, match=message):
        _recipe(**overrides)


def test_a_recipe_s_defaults_are_merged_over_method_options():
    recipe = _recipe(m=7)
    assert recipe.defaults() == {
        "m": 7,
        "description_sampling": "published",
        "description_length": "raw",
        "frame": None,
        "logit_scale_cap": None,
    }
    assert recipe.options().m == 7 and recipe.options().prm_top_k == 3
    assert get_recipe("dvp-cse").overrides == {} and get_recipe("dvp-cse").defaults()["m"] == 20


def _causes(count: int) -> list[tuple[str, dict[str, list[str]]]]:
    return [
        (f"cse_{n}.json", {c: sentences(f"cause {n}", c, count) for c in CLASSES})
        for n in (1, 2, 3)
    ]


def test_a_library_model_built_without_options_takes_the_recipe_s(dvp_mean):
    model = build_reprogrammer(dvp_mean, load_backbone("random:tiny"), CLASSES, _causes(12))
    assert model.bank.per_class == 3 * 10  # three causes, m=10 each


PLUGIN = """
from reprogram.model.parts import BY_FILE, CAUSES, MEAN, PADDING
from reprogram.model.recipes import Recipe, register_method

RECIPES = [
    Recipe("plugin-mean", PADDING, CAUSES, BY_FILE, MEAN, "from a plugin", {"m": 3}),
]


def register():
    register_method(Recipe("plugin-called", PADDING, CAUSES, BY_FILE, MEAN, "registers itself"))
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch):
    """Write an installed-looking package: ``entry_points`` lines -> a dist-info on sys.path."""
    monkeypatch.setattr(recipes, "_PLUGINS", {})
    site = tmp_path / "site"

    def install(*entry_points: str) -> None:
        info = site / "my_methods-1.0.dist-info"
        info.mkdir(parents=True)
        (site / "my_methods_h3.py").write_text(PLUGIN)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 1.0\n")
        lines = "\n".join(entry_points)
        (info / "entry_points.txt").write_text(f"[reprogram.methods]\n{lines}\n")
        monkeypatch.syspath_prepend(str(site))

    yield install
    unregister_method("plugin-mean")
    unregister_method("plugin-called")
    sys.modules.pop("my_methods_h3", None)


def test_an_installed_entry_point_trains_from_the_command_line(tmp_path, plugins, capsys):
    plugins("mean = my_methods_h3:RECIPES", "called = my_methods_h3:register")
    dataset = make_folder_dataset(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "--method", "plugin-mean", "--dataset", f"folder:{dataset}"]
    args += ["--backbone", "random:tiny", "--epochs", "1", "--shots", "2", "--quiet"]
    assert cli(*args, "--out", str(run)) == 0
    saved = load_checkpoint(run)["config"]["method"]
    assert saved["name"] == "plugin-mean" and saved["m"] == 3  # the plugin's own default
    capsys.readouterr()
    assert cli("methods") == 0
    listed = capsys.readouterr().out
    assert "plugin-mean" in listed and "m=3*" in listed and "plugin-called" in listed


def test_a_broken_entry_point_is_one_line_naming_it(plugins, capsys):
    plugins("broken = no_such_module_h3:RECIPES", "mean = my_methods_h3:RECIPES")
    assert cli("train", "--method", "nope", "--dataset", "folder:x") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "unknown method 'nope'" in err and "'broken = no_such_module_h3:RECIPES'" in err
    assert "plugin-mean" in err  # the other entry point still loaded
    assert cli("methods") == 0
    assert "warning: method plugin not loaded: entry point 'broken" in capsys.readouterr().err


def test_a_plugin_that_exits_on_import_is_one_line_not_an_exit(plugins, tmp_path, capsys):
    plugins("exits = exiting_plugin_h3:RECIPES", "mean = my_methods_h3:RECIPES")
    (tmp_path / "site" / "exiting_plugin_h3.py").write_text("import sys\nsys.exit(3)\n")
    try:
        assert cli("methods") == 0
    finally:
        sys.modules.pop("exiting_plugin_h3", None)
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("warning: method plugin not loaded: entry point 'exits = ")
    assert "SystemExit: 3" in line
    assert "plugin-mean" in captured.out  # the other entry point still loaded


def test_a_new_method_s_parts_say_which_settings_it_reads():
    """What a method reads is what its parts declare (and their kinds imply), so a new method's
    unread settings are named without a line of code for it."""
    from reprogram.engine.config import load_config
    from reprogram.engine.setup import unread_settings
    from reprogram.model.recipes import register_method

    own_source = parts.TextSource("mine", "my files", kinds=("des",), options=("m",))
    assert set(own_source.options) == {"m", "descriptions", "description_source"}
    assert "prm_warmup_epochs" in parts.PRM_AGGREGATION.options
    register_method(Recipe("plain-desc", parts.PADDING, own_source, parts.SINGLE, parts.MEAN, ""))
    try:
        values = {"dataset": "dtd", "descriptions": ["d.json"], "m": 4, "clusters": 2}
        warned = unread_settings(load_config(None, {"method": "plain-desc", **values}))
        assert [line.split("=")[0] for line in warned] == ["clusters"]  # k-means's, not its
        assert "method 'plain-desc' (padding · mine · single · mean)" in warned[0]
        warned = unread_settings(load_config(None, {"method": "ar", **values}))
        assert [line.split("=")[0] for line in warned] == ["m", "clusters", "descriptions"]
    finally:
        unregister_method("plain-desc")
