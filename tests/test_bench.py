"""``reprogram bench``: runs end to end on a tiny CPU config; both loops give the same logits."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import make_folder_dataset, quick_config

from reprogram.data import load_dataset
from reprogram.engine.setup import prepare
from reprogram.errors import ReprogramError
from reprogram.speed.reference import ReferenceModel, compare_logits, reference_fit
from reprogram.speed.run import BenchOptions, format_table, run_bench
from reprogram.speed.synthetic import write_dataset

TINY = BenchOptions.tiny()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("bench") / "data")


def test_bench_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    options = dataclasses.replace(TINY, epochs=3)  # the reference runs 2 epochs, projected to 3
    result = run_bench(options, json_path=out, command="reprogram bench (test)")
    assert json.loads(out.read_text())["schema"] == "reprogram-bench/1"
    assert result["equivalence_passed"], result["equivalence"]
    check = result["equivalence"][0]
    assert check["precision"] == "fp32" and check["max_abs_diff"] <= 1e-4 * check["max_abs_logit"]
    assert result["dataset"]["train_images"] == TINY.classes * TINY.train_per_class
    assert result["dataset"]["test_images"] == TINY.test_images
    ours, ref = result["ours"], result["reference"]
    for value in (
        ours["end_to_end_s"],
        ours["train_step_images_per_s"],
        ours["eval_images_per_s"],
        ours["train_epoch_images_per_s"],
        ref["end_to_end_s"],
        ref["train_step_images_per_s"],
        ref["eval_images_per_s"],
        ref["train_epoch_images_per_s"],
    ):
        assert value > 0
    assert ref["epochs_measured"] == 2 and ref["projected"]
    assert ref["end_to_end_s"] == pytest.approx(
        ref["setup_s"] + ref["prm_epoch_s"] + 2 * ref["train_epoch_s"]
    )
    flops = result["flops"]
    assert flops["ours_per_image"] > 0
    # the same encoder work; our scoring skips each text against the other prompts' features
    # (forward and input gradient: 2 × 2·(v-1)·C·M·d, with M = 3 files × m 20, d = 64 for tiny)
    skipped = 2 * 2 * (flops["prompts"] - 1) * result["dataset"]["classes"] * 60 * 64
    assert flops["ours_per_image"] == pytest.approx(
        flops["reference_per_image"] - skipped, rel=1e-9
    )
    assert ours["mfu"] > 0 and result["matmul_peak"]["flops_per_s"] > 0
    assert ours["peak_memory_bytes"] > 0
    assert result["frozen_backbone"]["parameters_with_gradients"] == []
    assert result["ratios"]["end_to_end_speedup"] > 0
    table = format_table(result)
    assert "training images/s" in table and "PASS" in table and "(projected)" in table


def test_bench_command_without_the_reference_run(tmp_path):
    from typer.testing import CliRunner

    from reprogram.cli import app, register_subcommands

    register_subcommands(app)
    out = tmp_path / "bench.json"
    args = ["bench", "--json", str(out), "--quiet", "--skip-reference"]
    sizes = "backbone classes train_per_class test_images image_size epochs reference_epochs"
    for key in [*sizes.split(), "steps", "batch_size", "device", "precision"]:
        args += [f"--{key.replace('_', '-')}", str(getattr(TINY, key))]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "training images/s" in done.output and "PASS" in done.output
    result = json.loads(out.read_text())
    assert "end_to_end_s" not in result["reference"]
    assert result["ratios"]["end_to_end_speedup"] is None
    assert result["ratios"]["train_step"] > 0  # the step comparison still runs
    assert result["command"].startswith("reprogram ")
    with pytest.raises(ReprogramError):
        dataclasses.replace(TINY, method="zero-shot").validate()
    with pytest.raises(ReprogramError):
        dataclasses.replace(TINY, epochs=1).validate()


@pytest.mark.parametrize("method", ["dvp-cse", "dvp-cls", "attrvr", "vp"])
def test_reference_model_matches_ours_in_fp32(dataset, method):
    """Sequential prompts give the logits and prompt gradients of the batched model."""
    parts = prepare(quick_config(dataset, method, device="cpu"))
    model = parts.model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.prompts.theta.copy_(torch.randn(model.prompts.theta.shape, generator=generator))
        if hasattr(model.aggregator, "prm"):
            weights = torch.rand(model.aggregator.prm.weights.shape, generator=generator)
            model.aggregator.prm.weights.copy_(weights / weights.sum(dim=1, keepdim=True))
    reference = ReferenceModel.from_reprogrammer(model)
    assert len(reference.theta) == model.prompts.count
    size = model.image_size
    images = torch.rand(3, 3, size, size, generator=generator)
    labels = torch.tensor([0, 1, 2])
    (check,) = compare_logits(model, reference, images, labels, torch.device("cpu"), torch.float32)
    assert check.passed, check
    assert check.relative < 1e-5 and check.grad_relative < 1e-5


def test_reference_loop_trains_and_estimates_the_prm(dataset):
    parts = prepare(quick_config(dataset, "dvp-cse", device="cpu"))
    reference = ReferenceModel.from_reprogrammer(parts.model)
    before = torch.stack([p.detach().clone() for p in reference.theta])
    rows = []
    run = reference_fit(
        reference,
        parts.splits.train[:6],
        parts.splits.test[:3],
        epochs=2,
        batch_size=4,
        device=torch.device("cpu"),
        on_epoch=rows.append,
    )
    assert (
        run.epochs_run == 2 and len(rows) == 2 and rows[0]["estimate_only"] and rows[1]["loss"] > 0
    )
    after = torch.stack([p.detach() for p in reference.theta])
    assert not torch.equal(before, after)  # epoch 2 trained
    weights = reference.aggregator.prm.weights
    assert torch.allclose(weights.sum(dim=1), torch.ones(weights.shape[0]))
    assert not torch.allclose(
        weights, torch.full_like(weights, 1 / weights.shape[1])
    )  # re-estimated


def test_synthetic_dataset_layout(tmp_path):
    spec = TINY.spec(val_per_class=1, descriptions_per_class=21)
    assert (spec.classes, spec.train_per_class, spec.test_images) == (2, 2, 4)
    root = write_dataset(tmp_path / "d", spec)
    splits = load_dataset(f"folder:{root}", None)
    assert splits.classnames == ["class_000", "class_001"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 4)
    causes = json.loads((root / "descriptions" / "cse_2.json").read_text())
    assert len(causes["class_001"]) == 21 and all(len(s) >= 20 for s in causes["class_001"])
    for name in ("cse_1", "cse_3", "des", "dist"):
        assert (root / "descriptions" / f"{name}.json").is_file()


def test_bench_command_is_registered():
    from typer.testing import CliRunner

    from reprogram.cli import app, register_subcommands

    register_subcommands(app)
    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--backbone",
        "--method",
        "--batch-size",
        "--classes",
        "--train-per-class",
        "--test-images",
        "--image-size",
        "--epochs",
        "--device",
        "--compile",
        "--precision",
        "--json",
        "--skip-reference",
    ):
        assert option in result.output, option


def test_mixed_precision_check_is_within_bf16_tolerance(dataset):
    parts = prepare(quick_config(dataset, "dvp-cse", device="cpu"))
    reference = ReferenceModel.from_reprogrammer(parts.model)
    size = parts.model.image_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    checks = compare_logits(
        parts.model, reference, images, torch.tensor([0, 1]), torch.device("cpu"), torch.bfloat16
    )
    assert [c.precision for c in checks] == ["fp32", "ours bfloat16 vs reference float32"]
    assert all(c.passed for c in checks), checks
    assert 0 < checks[1].relative < checks[1].tolerance


# -- bench --scale and the GPU check's dry run --------------------------------------------------
def test_scale_bench_times_each_step_and_bounds_the_training_pixels(tmp_path):
    from reprogram.speed.scale import ScaleOptions, format_scale, run_scale

    options = ScaleOptions.tiny(descriptions_per_class=2)
    out = tmp_path / "scale.json"
    result = run_scale(options, json_path=out, quiet=True)
    assert json.loads(out.read_text())["schema"] == "reprogram-bench-scale/1"
    data = result["dataset"]
    assert (data["classes"], data["train_images"], data["test_images"]) == (2, 4, 4)
    assert data["texts"] == 2 * 3 * 2 and data["texts_per_class"] == 6  # 3 cause files × m
    steps = {row["step"]: row for row in result["steps"]}
    for name in ("encode texts", "decode training images", "decode test images"):
        assert steps[name]["items"] > 0 and steps[name]["seconds"] > 0
    assert steps["one training epoch"]["items"] == 4
    assert all(row["host_peak_bytes"] > 0 for row in result["steps"])
    assert result["host_peak_bytes"] >= max(row["host_peak_bytes"] for row in result["steps"])
    assert result["device_peak_bytes"] is None  # no device on a CPU
    assert result["train_pixels"]["ratio"] <= 1.2
    assert result["test_pixels_bytes"] == 4 * 3 * data["model_image_size"] ** 2
    assert "encode texts" in format_scale(result)


def test_gpu_check_script_reads_its_arguments_before_any_python(tmp_path):
    """The shell part of scripts/gpu-check.sh (its --dry-run then runs the Python part below)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--dry-run" in shown.stdout
    wrong = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --fast" in wrong.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_gpu_check_dry_run_writes_one_record(tmp_path, capsys):
    """``scripts/gpu-check.sh --dry-run OUT`` = ``python -m reprogram.speed.gpucheck --dry-run
    OUT``, here in this process."""
    from reprogram.speed.gpucheck import main

    assert main(["--dry-run", str(tmp_path / "out")]) == 0
    assert "record written to" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert record["schema"] == "reprogram-gpu-check/1" and record["dry_run"]
    assert record["complete"] and record["errors"] == {}
    assert record["environment"]["torch"] == torch.__version__
    bench = record["bench"]["no_compile"]
    assert bench["equivalence_passed"] and bench["end_to_end_s"] > 0 and bench["speedup"] > 0
    assert bench["epochs"] == 2 and record["bench"]["compile"] is None
    assert record["bench"]["eval_vs_forward"]["ratio"] > 0
    assert record["memory"]["peak_bytes"] > 0 and record["memory"]["grad_checkpointing"]
    pair = record["precision"]
    assert 0 <= pair["prm_top_k_agreement"] <= 1 and pair["top_k"] == 3
    assert pair["accuracy_difference"] == pytest.approx(
        pair["bf16_test_accuracy"] - pair["fp32_test_accuracy"]
    )
    assert set(record["verdicts"]) == {
        "end_to_end", "speedup", "mfu", "eval_vs_forward", "vitl336_memory"
    }  # fmt: skip
    assert (tmp_path / "out" / "gpu-check.md").read_text().startswith("### CPU dry run")


def test_evaluation_throughput_by_method_model_and_folded(dataset, tmp_path):
    from reprogram.speed.inference import eval_throughput_phase
    from reprogram.speed.report import format_rows

    options = dataclasses.replace(TINY, eval_methods="dvp-cse,attrvr").validate()
    rows = eval_throughput_phase(
        ["dvp-cse", "attrvr"], options, f"folder:{dataset}", tmp_path, torch.device("cpu")
    )
    dvp, attrvr = rows
    assert (dvp["method"], dvp["prompts"], attrvr["prompts"]) == ("dvp-cse", 3, 1)
    assert dvp["images"] == 12 and dvp["model"]["images_per_s"] > 0
    assert dvp["folded"]["images_per_s"] > 0 and dvp["folded_relative_diff"] < 1e-5
    assert attrvr["folded"] is None and "top-k" in attrvr["not_foldable"]
    table = "\n".join(format_rows(rows))
    assert "dvp-cse" in table and "not foldable" in table
    with pytest.raises(ReprogramError, match="no-such-method"):
        dataclasses.replace(TINY, eval_methods="dvp-cse, no-such-method").validate()
