"""The demo: several seeds, mean ± std per method."""

from __future__ import annotations

import json

import pytest

from reprogram.toy.demo import DEMO_SEEDS, demo_lines, run_demo


def test_demo_defaults_to_three_seeds():
    assert DEMO_SEEDS == (1, 2, 3)


def test_demo_lines_show_mean_std_and_gain():
    table = {
        "rows": [
            {"method": "zero-shot", "cells": {"t": {"mean": 10.0, "std": 0.0, "seeds": [1, 2]}}},
            {"method": "vp", "cells": {"t": {"mean": 31.25, "std": 2.5, "seeds": [1, 2]}}},
        ]
    }
    lines = demo_lines(table)
    assert "2 seeds" in lines[0]
    assert lines[2].split()[1:4] == ["31.2", "±", "2.5"] and "+21.2 points" in lines[2]


def test_demo_runs_every_seed_on_a_small_task(tmp_path, capsys):
    small = dict(shots=2, train_pool=3, val_pool=1, test_per_class=2, batch_size=8)
    out = tmp_path / "demo"
    result = run_demo(
        out, quiet=True, task="digits", epochs=1, seeds=(1, 2), methods=("zero-shot",), **small
    )
    runs = sorted((out / "runs" / "digits" / "zero-shot").glob("seed-*/results.json"))
    accuracies = [100 * json.loads(p.read_text())["test_accuracy"] for p in runs]
    assert [p.parent.name for p in runs] == ["seed-1", "seed-2"]
    assert result["zero-shot"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert "mean ± std over 2 seeds" in capsys.readouterr().out
