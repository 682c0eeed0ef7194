"""Sweep specs: checking (one line naming file, line and key), expansion, run names, dry run."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli

from reprogram.errors import ReprogramError
from reprogram.sweep import expand, load_spec, parse_spec
from reprogram.sweep.executors import make_settings

SPEC = """\
out: {out}
methods: [vp, {{name: dvp-cse, m: [5, 10]}}]
root: {root}
datasets: [dtd, {{name: eurosat, root: /elsewhere}}, toy:heldout, folder:{root}/mine]
backbones: [random:tiny, {{name: ViT-B-16, weights: /w/vit.pt, label: vit-b16}}]
shots: [4, 16]
seeds: [1, 2]
lr: [10, 40]
epochs: 3
set: {{prm_top_k: [2]}}
executor: slurm
slurm: {{partition: gpu, time: "1:30:00", runs_per_task: 3}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_a_spec_expands_into_named_runs_in_folder_order(tmp_path):
    spec = load_spec(_write(tmp_path, SPEC.format(out=tmp_path / "out", root=tmp_path)))
    runs = expand(spec)
    # 4 datasets × (vp + dvp-cse × 2 m) × 2 backbones × 2 shots × 2 lr × 2 seeds
    assert len(runs) == 4 * 3 * 2 * 2 * 2 * 2
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert names[0] == "dtd/vp/random-tiny/4-shot/lr=10,prm_top_k=2/seed-1"
    assert "eurosat/dvp-cse/vit-b16/16-shot/lr=40,m=10,prm_top_k=2/seed-2" in names
    assert {r.labels["dataset"] for r in runs} == {"dtd", "eurosat", "heldout", "mine"}
    run = next(r for r in runs if r.name.startswith("eurosat/dvp-cse/vit-b16/16-shot/lr=40,m=10"))
    config = run.config()
    assert (config.method.name, config.method.m, config.optim.lr) == ("dvp-cse", 10, 40.0)
    assert (config.data.root, config.data.shots, config.optim.epochs) == ("/elsewhere", 16, 3)
    assert config.backbone.weights == "/w/vit.pt" and config.method.prm_top_k == 2
    dtd = next(r for r in runs if r.labels["dataset"] == "dtd").config()
    assert dtd.data.root == str(tmp_path)
    toy = next(r for r in runs if r.labels["dataset"] == "heldout").config()
    assert toy.data.dataset == f"folder:{tmp_path / 'out' / 'data' / 'heldout'}"
    vp = next(r for r in runs if r.labels["method"] == "vp").config()
    assert vp.method.m == 20  # m is an axis of dvp-cse only; vp keeps its default
    settings = make_settings("slurm", spec.executors["slurm"])
    assert (settings.partition, settings.time, settings.runs_per_task) == ("gpu", 90, 3)


def test_a_fixed_option_is_not_in_the_name_and_no_axes_read_default(tmp_path):
    spec = parse_spec(
        {
            "methods": ["vp"],
            "datasets": ["folder:/d/x"],
            "backbones": ["random:tiny"],
            "epochs": 7,
            "causes": [4, 5],
            "seeds": 3,
        }  # fmt: skip
    )
    [run] = expand(spec, tmp_path)
    assert run.name == "x/vp/random-tiny/16-shot/default/seed-3"
    assert run.config().optim.epochs == 7 and run.config().data.causes == [4, 5]
    spec = parse_spec(
        {"methods": ["dvp-cse"], "datasets": ["folder:/d/x"], "causes": [[1, 2, 3], [4, 5, 6]]}
    )
    assert [r.labels["options"] for r in expand(spec, tmp_path)] == ["causes=1+2+3", "causes=4+5+6"]


@pytest.mark.parametrize(
    ("line", "bad", "expected"),
    [
        (2, "methods: [vp, dvp-xyz]", "sweep.yaml:2: methods[1]: unknown method 'dvp-xyz'"),
        (3, "datasets: [dtd, dtdd]", "sweep.yaml:3: datasets[1]: unknown dataset 'dtdd'"),
        (3, "datasets: [toy:nope]", "sweep.yaml:3: datasets[0]: unknown toy task 'nope'"),
        (4, "lrr: [1, 2]", "sweep.yaml:4: lrr: unknown key 'lrr'"),
        (4, "seeds: [1]\nlrr: 3", "sweep.yaml:5: lrr: unknown key 'lrr'"),
        (4, "set: {mm: 3}", "sweep.yaml:4: set.mm: unknown key 'mm'"),
        (4, "lr: [1, fast]", "sweep.yaml:4: lr[1]: config key 'lr': cannot read 'fast'"),
        (4, "local: {worker: 2}", "sweep.yaml:4: local.worker: unknown local executor setting"),
        (4, "slurm: {gpus: 2}", "sweep.yaml:4: slurm.gpus: unknown slurm executor setting"),
        (4, "slurm: {time: [1]}", "sweep.yaml:4: slurm.time"),
        (4, "executor: pbs", "sweep.yaml:4: executor: unknown executor 'pbs'"),
        (4, "seed: [1, 2]", "sweep.yaml:4: seed: 'seed' is a sweep key of its own: use seeds"),
        (4, "device: [cpu, cuda]", "sweep.yaml:4: device: 'device' is an execution setting"),
        (4, "seeds: [1, 1]", "sweep.yaml:4: seeds: a value is given twice"),
        (4, "lr: 1\nset: {optim.lr: 2}", "sweep.yaml:5: set.optim.lr: 'lr' is given twice"),
        (2, "methods: [{name: vp, lrr: 3}]", "sweep.yaml:2: methods[0].lrr: unknown key 'lrr'"),
    ],
)
def test_a_bad_spec_is_one_line_naming_file_line_and_key(tmp_path, line, bad, expected):
    lines = ["out: runs/x", "methods: [vp]", "datasets: [dtd]", "root: /data"]
    lines[line - 1] = bad if line < 4 else lines[line - 1]
    if line == 4:
        lines.insert(3, bad)
    path = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ReprogramError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / expected)), message


def test_a_published_dataset_without_a_root_and_a_missing_part_are_named(tmp_path):
    path = _write(tmp_path, "methods: [vp]\ndatasets:\n  - folder:/x\n  - dtd\n")
    with pytest.raises(ReprogramError, match=r"sweep.yaml:4: datasets\[1\]: .*needs a root"):
        load_spec(path)
    path = _write(tmp_path, "datasets: [dtd]\nroot: /d\n")
    with pytest.raises(ReprogramError, match="methods: missing"):
        load_spec(path)


def test_a_bad_combination_names_the_run(tmp_path):
    spec = parse_spec({"methods": ["dvp-cse"], "datasets": ["folder:/d/x"], "m": 3,
                       "attr_top_k": 1, "prm_top_k": [1, 4]})  # fmt: skip
    with pytest.raises(ReprogramError, match=r"run x/dvp-cse/ViT-B-16/16-shot/prm_top_k=4/seed-1: "
                       r"prm_top_k must be between 1 and m \(3"):  # fmt: skip
        expand(spec, tmp_path)


def test_dry_run_prints_the_expansion_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    path = _write(tmp_path, SPEC.format(out=out, root=tmp_path))
    assert cli("sweep", str(path), "--dry-run") == 0
    printed = capsys.readouterr().out
    assert f"sweep into {out}: 192 runs" in printed
    assert "  heldout/dvp-cse/vit-b16/16-shot/lr=40,m=5,prm_top_k=2/seed-2" in printed
    assert not out.exists()
    assert cli("sweep", str(path), "--status") == 0
    assert "0/192 done" in capsys.readouterr().out
    assert not out.exists()


def test_the_cli_names_a_bad_spec_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, "methods: [vp]\ndatasets: [folder:/x]\nlocal: {workers: two}\n")
    assert cli("sweep", str(path), "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}:3: local.workers: expected a whole number, got 'two'"


def test_shipped_example_specs_expand(tmp_path):
    examples = Path(__file__).resolve().parents[1] / "examples"
    paper = expand(load_spec(examples / "paper-table.yaml"), tmp_path)
    assert len(paper) == 11 * 5 * 3
    assert {r.labels["method"] for r in paper} == {"vp", "ar", "attrvr", "dvp-cse", "dvp-cls"}
    assert {r.config().backbone.name for r in paper} == {"ViT-B-16"}
    assert {r.labels["seed"] for r in paper} == {"seed-1", "seed-2", "seed-3"}
    toy = expand(load_spec(examples / "toy-sweep.yaml"), tmp_path)
    assert {r.config().backbone.name for r in toy} == {"toy"}


def test_an_unknown_key_suggests_the_close_ones(tmp_path):
    path = _write(tmp_path, "methods: [vp]\ndatasets: [folder:/x]\nlrr: 3\nseed: [1, 2]\n")
    with pytest.raises(ReprogramError, match=r"sweep.yaml:3: lrr: .* \(did you mean lr\?\)$"):
        load_spec(path)


def test_a_callers_own_keys_are_kept_for_it(tmp_path):
    text = "methods: [vp]\ndatasets: [folder:/x]\nsearch:\n  lr: {low: 1, high: 100}\n"
    path = _write(tmp_path, text)
    with pytest.raises(ReprogramError, match="sweep.yaml:3: search: unknown key 'search'"):
        load_spec(path)
    spec = load_spec(path, extra_keys=("search", "trials"))
    assert spec.extra == {"search": {"lr": {"low": 1, "high": 100}}}
    assert spec.where(("search", "lr")).endswith("sweep.yaml:4: search.lr")


def test_a_dotted_key_of_the_specs_own_is_refused_too(tmp_path):
    path = _write(tmp_path, "methods: [vp]\ndatasets: [folder:/x]\nset: {data.shots: [1, 2]}\n")
    with pytest.raises(ReprogramError, match="sweep.yaml:3: set.data.shots: .* use shots"):
        load_spec(path)
