"""The GPU check's plan (reprogram.speed.gpucheck), with its measurements replaced by stand-ins:
the compiled run first, the run without compile sized to the time left, a record on disk after
each part, and a failing part recorded without losing the others."""

from __future__ import annotations

import dataclasses
import json

import pytest

from reprogram.speed import gpucheck
from reprogram.speed.options import BenchOptions

COMPILED_S = 100.0  # the stand-in compiled run: 200 epochs end to end


def _bench_result(options: BenchOptions) -> dict:
    seconds = COMPILED_S if options.compile else 2.0 * COMPILED_S * options.epochs / 200
    reference = None if options.skip_reference else 2400.0
    return {
        "ours": {
            "end_to_end_s": seconds,
            "mfu": 0.45 if options.compile else 0.25,
            "peak_memory_bytes": 2**30,
            "eval_images_per_s": 5000.0,
        },
        "reference": {} if reference is None else {"end_to_end_s": reference, "mfu": 0.2},
        "ratios": {
            "end_to_end_speedup": None if reference is None else reference / seconds,
            "train_step": 2.0,
        },
        "equivalence_passed": True,
        "precision": {"ours": "bfloat16", "reference": "float16"},
    }


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Replace the measurements; returns the calls (name, details) in order."""
    calls = []
    out = tmp_path / "out"

    def bench(options, log=None):
        calls.append(("bench", options.compile, options.epochs, options.skip_reference))
        return _bench_result(options)

    def eval_vs_forward(options, tmp):
        calls.append(("eval", json.loads((out / "gpu-check.json").read_text())))
        return {"eval_images_per_s": 90.0, "forward_only_images_per_s": 100.0, "ratio": 0.9}

    def memory(backbone, batch, steps, device, tmp):
        calls.append(("memory",))
        raise RuntimeError("CUDA out of memory")

    def precision(options, epochs, tmp):
        calls.append(("precision",))
        return {
            "epochs": epochs, "top_k": 3, "prm_top_k_agreement": 0.9,
            "prm_top_k_identical_classes": 0.8, "fp32_test_accuracy": 0.5,
            "bf16_test_accuracy": 0.52, "accuracy_difference": 0.02,
        }  # fmt: skip

    monkeypatch.setattr(gpucheck, "run_bench", bench)
    monkeypatch.setattr(gpucheck, "_eval_vs_forward", eval_vs_forward)
    monkeypatch.setattr(gpucheck, "_memory", memory)
    monkeypatch.setattr(gpucheck, "_precision_pair", precision)
    return calls, out


def _gpu_plan_on_cpu() -> gpucheck.CheckSizes:
    """The full check's plan (200 epochs, not a dry run) with a device this test has."""
    return dataclasses.replace(
        gpucheck.CheckSizes.dry(), bench=dataclasses.replace(BenchOptions.tiny(), epochs=200)
    )


def test_compiled_run_first_then_the_run_without_compile_in_the_time_left(stand_ins):
    calls, out = stand_ins
    # 60 s of set-up and 2.5 × 0.5 s per epoch: 80 epochs fit in 161.2 s less up to 1.2 s spent
    record = gpucheck.run_check(
        out, budget_s=161.2, sizes=_gpu_plan_on_cpu(), log=lambda _text: None
    )
    assert calls[0] == ("bench", True, 200, False)  # compiled, against the reference
    assert calls[-1] == ("bench", False, 80, True)  # without compile, last, 80 epochs
    assert [c[0] for c in calls] == ["bench", "eval", "memory", "precision", "bench"]
    on_disk = calls[1][1]  # the record as written before the second part ran
    assert not on_disk["complete"] and on_disk["bench"]["compile"]["epochs"] == 200
    assert on_disk["bench"]["eval_vs_forward"] is None

    assert record == json.loads((out / "gpu-check.json").read_text())
    assert record["complete"] and record["errors"] == {"memory": "RuntimeError: CUDA out of memory"}
    assert record["memory"] is None and record["precision"]["epochs"] == 2
    compiled, plain = record["bench"]["compile"], record["bench"]["no_compile"]
    assert compiled["speedup"] == pytest.approx(24.0)
    assert plain["epochs"] == 80 and plain["speedup"] is None  # not the reference's 200 epochs
    assert record["verdicts"] == {
        "end_to_end": True, "speedup": True, "mfu": True, "eval_vs_forward": True,
        "vitl336_memory": None,
    }  # fmt: skip
    text = (out / "gpu-check.md").read_text()
    assert "| no compile | 80 |" in text and "- memory failed: RuntimeError" in text
    assert "Incomplete" not in text


def test_the_run_without_compile_is_skipped_when_no_time_is_left(stand_ins):
    calls, out = stand_ins
    record = gpucheck.run_check(out, budget_s=30, sizes=_gpu_plan_on_cpu(), log=lambda _t: None)
    assert [c[0] for c in calls] == ["bench", "eval", "memory", "precision"]
    assert "of the budget left" in record["bench"]["no_compile"]["skipped"]
    assert record["verdicts"]["end_to_end"] is True  # from the compiled run
    assert "| no compile | skipped: " in (out / "gpu-check.md").read_text()


def test_an_incomplete_record_says_so():
    record = {
        "dry_run": False, "device": "NVIDIA H100", "date": "2026-12-08", "torch": "2.11.0",
        "complete": False, "errors": {}, "total_s": 200.0, "memory": None, "precision": None,
        "environment": {
            "torchvision": "0.26.0", "cuda": "13.0", "driver": "580.159.04", "python": "3.12.3"
        },
        "bench": {"compile": None, "no_compile": None, "eval_vs_forward": None},
    }  # fmt: skip
    record["verdicts"] = gpucheck._verdicts(record)
    assert set(record["verdicts"].values()) == {None}
    text = gpucheck.format_markdown(record)
    assert "torch 2.11.0, torchvision 0.26.0, CUDA 13.0, driver 580.159.04" in text
    assert "**Incomplete**" in text
