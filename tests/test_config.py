"""The nested config: flat and dotted keys, the persisted identity, old flat run folders."""

from __future__ import annotations

import pytest
import yaml

from reprogram.engine.config import (
    VERSION,
    MethodConfig,
    TrainConfig,
    flat_items,
    is_runtime_key,
    load_config,
    read_config_file,
    resumed_config,
    save_config,
)
from reprogram.errors import ReprogramError
from reprogram.model import parts
from reprogram.model.options import MethodOptions
from reprogram.model.recipes import Recipe, register_method, unregister_method

# a config.yaml as runs made before the split wrote it (flat, runtime included)
OLD_FLAT = {
    "method": "dvp-cls",
    "dataset": "folder:/data/task",
    "backbone": "random:tiny",
    "seed": 3,
    "shots": 4,
    "epochs": 7,
    "lr": 2.5,
    "m": 6,
    "kmeans_n_init": 10,
    "precision": "fp32",
    "device": "cuda",
    "eval_batch_size": 32,
    "removed_long_ago": 1,
}


@pytest.mark.parametrize(
    "flat, dotted, read",
    [
        ({"lr": "10"}, {"optim.lr": "10"}, lambda c: c.optim.lr),
        ({"m": "10"}, {"method.m": "10"}, lambda c: c.method.m),
        ({"method": "ar"}, {"method.name": "ar"}, lambda c: c.method.name),
        ({"backbone": "random:tiny"}, {"backbone.name": "random:tiny"}, lambda c: c.backbone.name),
        ({"quiet": "yes"}, {"runtime.quiet": "yes"}, lambda c: c.runtime.quiet),
        ({"shots": "2"}, {"data.shots": "2"}, lambda c: c.data.shots),
    ],
)
def test_flat_and_dotted_keys_set_the_same_field(flat, dotted, read):
    default = read(TrainConfig())
    a, b = read(load_config(None, flat)), read(load_config(None, dotted))
    assert a == b and a != default


@pytest.mark.parametrize(
    "key, hint",
    [
        ("epoch", "did you mean epochs"),
        ("optim.epoch", "did you mean epochs"),
        ("optim.m", None),
        ("nope.lr", None),
    ],
)
def test_unknown_keys_are_one_line_errors(key, hint):
    with pytest.raises(ReprogramError, match=f"unknown config key '{key}'") as err:
        load_config(None, {key: "1"})
    assert "\n" not in str(err.value)
    assert hint is None or hint in str(err.value)


def test_yaml_files_take_flat_dotted_and_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 3\nmethod.m: 4\noptim: {epochs: 5}\nmethod: ar\n")
    config = load_config(path, {"optim.batch_size": "8"})
    assert (config.optim.lr, config.method.m, config.optim.epochs) == (3.0, 4, 5)
    assert (config.method.name, config.optim.batch_size) == ("ar", 8)


def test_the_persisted_form_is_the_identity_without_runtime(tmp_path):
    config = load_config(None, {"dataset": "dtd", "lr": "3", "m": "4", "device": "cpu"})
    saved = config.to_dict()
    assert saved["version"] == VERSION and "runtime" not in saved
    assert (saved["optim"]["lr"], saved["method"]["m"], saved["data"]["dataset"]) == (3.0, 4, "dtd")
    again = TrainConfig.from_dict(saved)
    assert again.runtime.device == "auto"  # execution settings are not persisted
    assert flat_items(again) == flat_items(config)
    save_config(config, tmp_path / "config.yaml")
    assert flat_items(read_config_file(tmp_path / "config.yaml")) == flat_items(config)
    assert flat_items(load_config(tmp_path / "config.yaml")) == flat_items(config)


def test_old_flat_run_configs_are_read_into_their_parts(tmp_path):
    config = TrainConfig.from_dict(OLD_FLAT)
    assert (config.method.name, config.method.m, config.method.kmeans_n_init) == ("dvp-cls", 6, 10)
    assert (config.data.dataset, config.data.shots, config.seed) == ("folder:/data/task", 4, 3)
    assert (config.optim.epochs, config.optim.lr) == (7, 2.5)
    assert (config.backbone.name, config.backbone.precision) == ("random:tiny", "fp32")
    assert (config.runtime.device, config.runtime.eval_batch_size) == ("cuda", 32)
    assert config.optim.lr_schedule_span == "training-steps"  # what those runs used
    assert (
        TrainConfig.from_dict({**OLD_FLAT, "lr_schedule_span": "all-epochs"}).optim.lr_schedule_span
        == "all-epochs"
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(OLD_FLAT))
    assert read_config_file(tmp_path / "config.yaml").method.m == 6


def test_runs_stored_before_the_published_scale_and_filter_read_back_with_theirs():
    """Runs made when the scores' scale was capped at 100 and the length filter stripped first
    keep both on reload and resume; new runs store the published defaults."""
    saved = load_config(None, {"dataset": "dtd"}).to_dict()
    assert (saved["method"]["logit_scale_cap"], saved["method"]["description_length"]) == (
        None,
        "raw",
    )
    assert TrainConfig.from_dict(saved).method.logit_scale_cap is None
    for key in ("logit_scale_cap", "description_length"):
        del saved["method"][key]
    for old in (TrainConfig.from_dict(saved).method, TrainConfig.from_dict(OLD_FLAT).method):
        assert (old.logit_scale_cap, old.description_length) == (100.0, "stripped")


def test_unknown_versions_and_nested_keys_are_refused():
    with pytest.raises(ReprogramError, match="version 99"):
        TrainConfig.from_dict({"version": 99})
    with pytest.raises(ReprogramError, match="'optim': unknown keys m"):
        TrainConfig.from_dict({"version": VERSION, "optim": {"m": 3}})


def test_resume_takes_identity_from_saved_and_runtime_from_the_caller():
    saved = load_config(None, {"dataset": "dtd", "lr": "3", "eval_batch_size": "9"}).to_dict()
    caller = TrainConfig().updated(lr=1.0, eval_batch_size=5, quiet=True, device="cpu")
    config = resumed_config(saved, caller)
    assert (config.optim.lr, config.data.dataset) == (3.0, "dtd")
    assert (config.runtime.eval_batch_size, config.runtime.quiet, config.runtime.device) == (
        5,
        True,
        "cpu",
    )
    assert config.runtime is not caller.runtime


def test_runtime_keys_and_updated_copies():
    assert is_runtime_key("device") and is_runtime_key("runtime.quiet")
    assert not is_runtime_key("lr") and not is_runtime_key("precision")
    base = TrainConfig()
    changed = base.updated(lr=2.0, descriptions=["a.json"], seed=4)
    assert (changed.optim.lr, changed.data.descriptions, changed.seed) == (2.0, ["a.json"], 4)
    assert (base.optim.lr, base.data.descriptions, base.seed) == (40.0, [], 1)


def test_method_defaults_are_method_options():
    assert MethodConfig().options() == MethodOptions()
    assert isinstance(TrainConfig().method, MethodOptions)


@pytest.fixture
def own_defaults():
    """A method with defaults of its own: m=10, prm_top_k=1 (MethodOptions': 20, 3)."""
    recipe = Recipe(
        "test-own-defaults",
        parts.PADDING,
        parts.CAUSES,
        parts.BY_FILE,
        parts.PRM_AGGREGATION,
        "",
        {"m": 10, "prm_top_k": 1},
    )
    register_method(recipe)
    yield recipe.name
    unregister_method(recipe.name)


def _own(config: TrainConfig) -> tuple[int, int]:
    return config.method.m, config.method.prm_top_k


def test_naming_a_method_brings_its_defaults_unless_given_alongside(own_defaults, tmp_path):
    from reprogram.cli.options import config_from

    assert _own(load_config(None, {"method": own_defaults})) == (10, 1)
    assert _own(load_config(None, {"method": own_defaults, "m": "4"})) == (4, 1)
    assert _own(TrainConfig().updated(method=own_defaults)) == (10, 1)
    assert _own(TrainConfig().updated(**{"method.name": own_defaults, "prm_top_k": 2})) == (10, 2)
    assert _own(config_from(None, ["prm_top_k=2"], method=own_defaults)) == (10, 2)  # --method
    path = tmp_path / "c.yaml"
    path.write_text(f"method: {own_defaults}\n")
    assert _own(load_config(path)) == (10, 1)
    path.write_text(f"method: {{name: {own_defaults}, prm_top_k: 2}}\n")
    assert _own(load_config(path)) == (10, 2)
    path.write_text("m: 6\n")  # the file and the command line are given together
    assert _own(load_config(path, {"method": own_defaults})) == (6, 1)
    # another method brings its own again, and a call that names none changes none
    assert _own(TrainConfig().updated(method=own_defaults).updated(method="dvp-cse")) == (20, 3)
    assert _own(TrainConfig().updated(method=own_defaults).updated(lr=1.0)) == (10, 1)


def test_a_run_s_config_reloads_exactly_without_applying_defaults(own_defaults, tmp_path):
    saved = load_config(None, {"method": own_defaults, "m": "4"}).to_dict()
    assert (saved["method"]["m"], saved["method"]["prm_top_k"]) == (4, 1)
    assert _own(TrainConfig.from_dict(saved)) == (4, 1)
    saved["method"]["prm_top_k"] = 3  # a stored value stays, even MethodOptions' own
    assert _own(TrainConfig.from_dict(saved)) == (4, 3)
    save_config(TrainConfig.from_dict(saved), tmp_path / "config.yaml")
    assert _own(read_config_file(tmp_path / "config.yaml")) == (4, 3)
    assert _own(load_config(tmp_path / "config.yaml", {"method": own_defaults})) == (4, 3)
    assert _own(TrainConfig.from_dict({"method": own_defaults, "m": 5})) == (5, 3)  # old flat


def test_set_options_accept_dotted_names():
    from reprogram.cli.options import config_from

    config = config_from(None, ["optim.lr=10", "m=7", "runtime.quiet=true"])
    assert (config.optim.lr, config.method.m, config.runtime.quiet) == (10.0, 7, True)


@pytest.mark.numeric
def test_a_run_folder_of_the_old_flat_form_loads_and_groups_like_a_new_one(tmp_path):
    import torch
    from helpers import make_folder_dataset, quick_config

    from reprogram.engine.runs import comparison_table, load_run
    from reprogram.engine.train import fit

    data = make_folder_dataset(tmp_path / "data")
    config = quick_config(data, "dvp-cse", epochs=1, prm_warmup_epochs=0)
    fit(config, tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    checkpoint = torch.load(tmp_path / "new" / "checkpoint.pt", weights_only=False)
    flat = flat_items(TrainConfig.from_dict(checkpoint["config"]), runtime=True)
    checkpoint["config"] = flat
    torch.save(checkpoint, old / "checkpoint.pt")
    (old / "config.yaml").write_text(yaml.safe_dump(flat))
    (old / "results.json").write_text((tmp_path / "new" / "results.json").read_text())
    new, loaded = (load_run(tmp_path / d, device="cpu") for d in ("new", "old"))
    assert flat_items(loaded.config) == flat_items(new.config)
    images = torch.rand(2, 3, new.model.image_size, new.model.image_size)
    with torch.no_grad():
        a, b = new.model(images).logits, loaded.model(images).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    [row] = comparison_table([tmp_path / "new", old])["rows"]
    assert next(iter(row["cells"].values()))["n"] == 2


@pytest.mark.parametrize(
    "stored, refused",
    [
        ({}, None),
        ({"subsample_classes": "all"}, "subsample_classes=all (asked: base)"),
        ({"method": "ar"}, "method=ar (asked: dvp-cse)"),
        ({"seed": 2}, "seed=2 (asked: 1)"),
    ],
)
def test_base_to_novel_reuses_only_a_finished_base_run_of_the_same_settings(
    tmp_path, stored, refused
):
    from reprogram.protocols.base_to_novel import _train_base

    base = {"dataset": "dtd", "subsample_classes": "base"}
    save_config(TrainConfig().updated(**{**base, **stored}).validate(), tmp_path / "config.yaml")
    (tmp_path / "results.json").write_text('{"test_accuracy": 0.5}')
    asked = TrainConfig().updated(**base)
    if refused is None:
        assert _train_base(asked, tmp_path, False, False) == {"test_accuracy": 0.5}
    else:
        with pytest.raises(ReprogramError) as caught:
            _train_base(asked, tmp_path, False, False)
        message = str(caught.value)
        assert f"{tmp_path} holds a run of other settings ({refused}" in message
        assert "--overwrite" in message and "\n" not in message


@pytest.mark.parametrize("key", ["epochs", "shots", "lr", "seed"])
def test_a_yaml_bool_is_not_a_number(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"{key}: true\n")
    with pytest.raises(ReprogramError, match=f"c.yaml: config key '{key}': cannot read True"):
        load_config(path)
    assert load_config(None, {"augment": True}).data.augment is True  # bools stay bools


def test_one_key_given_two_values_is_refused_naming_both(tmp_path):
    from reprogram.cli.options import config_from

    path = tmp_path / "c.yaml"
    path.write_text("shots: 2\ndata: {shots: 3}\n")
    with pytest.raises(ReprogramError, match=r"c.yaml: .*'shots' \(and 'data.shots'\).* 2 and 3"):
        load_config(path)
    with pytest.raises(ReprogramError, match=r"config key 'epochs' .* 1 and 3"):
        config_from(None, ["epochs=3"], epochs=1)
    with pytest.raises(ReprogramError, match=r"--set: config key 'lr' .* '1' and '2'"):
        config_from(None, ["lr=1", "lr=2"])
    with pytest.raises(ReprogramError, match=r"'m' \(and 'method.m'\) .* 4 and 5"):
        config_from(None, ["m=4", "method.m=5"])
    # the same value twice is no conflict, and a command line still overrides its YAML file
    assert config_from(None, ["epochs=3"], epochs=3).optim.epochs == 3
    path.write_text("shots: 2\nepochs: 5\n")
    assert config_from(path, ["epochs=7"], shots=4).optim.epochs == 7
    assert config_from(path, [], shots=4).data.shots == 4


@pytest.mark.parametrize(
    "method, epochs, warmup, refused",
    [
        ("dvp-cse", 1, 1, True),
        ("dvp-cls", 3, 5, True),
        ("dvp-cse", 2, 1, False),
        ("dvp-cse", 1, 0, False),
        ("dvp-cse", 0, 1, False),  # 0 epochs: evaluate only
        ("ar", 1, 1, False),  # no PRM to estimate
    ],
)
def test_warmup_that_leaves_no_training_epoch_is_refused(method, epochs, warmup, refused):
    config = load_config(
        None,
        {"method": method, "dataset": "dtd", "epochs": epochs, "prm_warmup_epochs": warmup},
    )
    if not refused:
        config.validate()
        return
    with pytest.raises(ReprogramError) as err:
        config.validate()
    message = str(err.value)
    assert f"prm_warmup_epochs ({warmup})" in message and f"epochs ({epochs})" in message
    assert "\n" not in message
