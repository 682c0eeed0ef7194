"""`reprogram explain` on trained heads: the maths of the P̃ and E sections on hand-checkable
matrices, the sections' numbers against a trained RVP run's own P and E, and the page in Chromium.

The browser check reuses test_report's DevTools client and skips, with the reason, when Chromium is
not installed; its screenshot is saved as ``tests/artifacts/report-heads-screenshot.png``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import cli, make_folder_dataset, quick_config

from reprogram.engine.checkpoint import load_checkpoint
from reprogram.engine.train import fit
from reprogram.model.aggregation import Mean
from reprogram.model.heads import DenseHead, LinearProbe, StructuredHead
from reprogram.report import head_maths as hm
from reprogram.report.explain import explain
from reprogram.report.load import BackboneCache, Options, load_run_data, summarise
from reprogram.report.sections.inter import PAIRS, compute_inter, heatmap_classes
from reprogram.report.sections.intra import compute_intra

# ------------------------------------------------------------------------------- the maths


def test_stable_rank_of_hand_checkable_matrices():
    u, v = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 1.0, -1.0])
    assert hm.stable_rank(torch.outer(u, v)) == pytest.approx(1.0)
    assert hm.stable_rank(torch.eye(4)) == pytest.approx(4.0)
    assert hm.stable_rank(torch.diag(torch.tensor([3.0, 4.0]))) == pytest.approx(25 / 16)
    assert math.isnan(hm.stable_rank(torch.zeros(3, 3)))


def test_permuted_stable_rank_is_a_seeded_mean_over_permutations():
    assert hm.permuted_stable_rank(torch.full((3, 3), 2.0)) == pytest.approx(1.0)
    diagonal = torch.diag(torch.tensor([1.0, 1.0, 1.0]))  # any permutation of I: rank 1 to 3
    value = hm.permuted_stable_rank(diagonal, draws=6, seed=4)
    assert 1.0 <= value <= 3.0 and value == hm.permuted_stable_rank(diagonal, draws=6, seed=4)


def test_diagonal_fraction():
    assert hm.diagonal_fraction(torch.eye(3)) == pytest.approx(1.0)
    assert hm.diagonal_fraction(torch.ones(2, 2) - torch.eye(2)) == 0.0
    assert hm.diagonal_fraction(torch.tensor([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(3 / 5)
    assert math.isnan(hm.diagonal_fraction(torch.zeros(2, 2)))


def test_e_changes_predictions_and_corrects_by_f_e_over_f():
    base = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    inter = torch.tensor([[0.0, -3.0], [0.0, 0.0]])  # f[0] pushes class 1 down
    torch.testing.assert_close(
        hm.mixed_logits(base, inter), torch.tensor([[2.0, -5.0], [1.0, 0.0]])
    )
    assert hm.changed_predictions(base, inter).tolist() == [False, True]
    corrections = hm.relative_corrections(base, inter)
    torch.testing.assert_close(corrections, torch.tensor([6 / math.sqrt(5), 3 / math.sqrt(10)]))
    assert hm.relative_corrections(torch.zeros(1, 2), inter).tolist() == [0.0]


def test_effect_counts_fixes_and_breaks():
    labels = torch.tensor([0, 1, 1, 2])
    base, mixed = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 0, 2])
    effect = hm.effect(labels, base, mixed, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert effect == hm.Effect(4, 0.5, 1, 1, 0.75, 0.75, pytest.approx(0.25))
    assert (
        hm.pair_confusions(labels, base, 0, 1) == 1 and hm.pair_confusions(labels, mixed, 0, 1) == 1
    )
    assert hm.pair_confusions(labels, torch.tensor([1, 0, 0, 2]), 0, 1) == 3


def test_strongest_pairs_are_off_diagonal_by_magnitude_with_sign():
    matrix = torch.tensor([[9.0, -3.0, 1.0], [2.0, 0.0, 3.0], [0.0, -0.5, 7.0]])
    pairs = hm.strongest_pairs(matrix, 3)
    assert [(p.row, p.column, p.value) for p in pairs] == [(0, 1, -3.0), (1, 2, 3.0), (1, 0, 2.0)]
    assert len(hm.strongest_pairs(matrix, 50)) == 5  # every non-zero off-diagonal entry
    assert hm.strongest_pairs(torch.eye(3), 5) == []


def test_r90_of_hand_checkable_prototypes():
    eye = torch.eye(10)
    # each class's descriptions all equal e_c (any length): orthonormal prototypes, all
    # eigenvalues 1, 9 of 10 hold 90 %
    features = torch.stack([torch.stack([eye[c], 2 * eye[c], 0.5 * eye[c]]) for c in range(10)])
    torch.testing.assert_close(hm.class_prototypes(features).float(), eye)
    assert hm.mass_rank(hm.class_prototypes(features)) == 9
    assert hm.r90_over_classes(features) == pytest.approx(0.9)
    assert hm.r90_over_classes(features[:3, :, :3]) == pytest.approx(1.0)  # ceil(2.7) = 3 of 3
    same = torch.ones(4, 2, 5)  # every prototype equal: one eigenvalue holds everything
    assert hm.r90_over_classes(same) == pytest.approx(1 / 4)
    # the prototype is the plain mean of normalised descriptions (not normalised again)
    two = torch.stack([torch.stack([eye[0, :2], eye[1, :2]]), torch.stack([eye[1, :2]] * 2)])
    torch.testing.assert_close(
        hm.class_prototypes(two).float(), torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    )
    # eigenvalues 9 and 1 (prototypes 3·e1 and e2): the first holds exactly 90 %
    assert hm.mass_rank(torch.tensor([[3.0, 0.0], [0.0, 1.0]])) == 1
    assert hm.mass_rank(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), mass=0.95) == 2


def test_effective_counts_and_description_ranking():
    weights = torch.tensor([[0.25] * 4, [1.0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    torch.testing.assert_close(hm.effective_counts(weights), torch.tensor([4.0, 1.0, 2.0]))
    assert hm.rank_descriptions([0.1, 0.4, 0.4, 0.1], [0, 1, 2, 5], 4) == [2, 1, 3, 0]
    assert hm.rank_descriptions([0.1, 0.4, 0.4, 0.1], None, 3) == [1, 2, 0]


def test_sections_ask_the_aggregator_not_the_method():
    rvp = StructuredHead(3, 4)
    torch.testing.assert_close(hm.intra_weights(rvp), torch.full((3, 4), 0.25))
    torch.testing.assert_close(hm.inter_matrix(rvp), torch.zeros(3, 3))
    no_p, no_e = StructuredHead(3, 4, intra=False), StructuredHead(3, 4, inter=False)
    assert hm.intra_weights(no_p) is None and hm.inter_matrix(no_p) is not None
    assert hm.intra_weights(no_e) is not None and hm.inter_matrix(no_e) is None
    for other in (Mean(), DenseHead(3, 4), LinearProbe(3)):
        assert hm.intra_weights(other) is None and hm.inter_matrix(other) is None


def test_long_class_lists_show_the_classes_of_the_strongest_pairs():
    matrix = torch.zeros(50, 50)
    matrix[7, 3], matrix[3, 40], matrix[12, 7], matrix[45, 46] = -4.0, 3.0, 2.0, 1.0
    pairs = hm.strongest_pairs(matrix, 10)
    assert heatmap_classes(pairs, 50, 4) == (
        [3, 7, 12, 40],
        "the 4 classes of the strongest pairs, of 50",
    )
    assert len(pairs) == 4  # zero entries are no pair
    assert heatmap_classes(pairs, 50, 40)[0] == [3, 7, 12, 40, 45, 46]
    assert heatmap_classes(pairs, 30, 40) == (list(range(30)), None)
    assert heatmap_classes([], 50, 4) == ([0, 1, 2, 3], "the first 4 classes of 50")
    assert hm.null_draws(200) == 10 and hm.null_draws(1000) == 3


def test_an_all_zero_e_renders_without_pairs_and_null_ranks(tmp_path):
    from reprogram.report.common import Output
    from reprogram.report.sections.inter import InterView, compute_statistics, render_inter

    classes = 50
    inter = torch.zeros(classes, classes)
    features = torch.eye(classes).unsqueeze(1).expand(classes, 2, classes)
    stats = compute_statistics(inter, features)
    assert math.isnan(stats.stable_rank) and math.isnan(stats.diagonal_fraction)
    assert stats.r90 == 45 and stats.r90_over_c == pytest.approx(0.9)
    names = [f"class {c}" for c in range(classes)]
    shown, selection = heatmap_classes([], classes, 40)
    view = InterView(
        "run1-inter", inter.numpy(), names, stats, [], None, "no images", shown, selection
    )
    html = render_inter(view, Output(tmp_path, "."))
    assert "no non-zero off-diagonal entry" in html and "no images" in html
    saved = json.loads((tmp_path / "inter-class.json").read_text())
    assert saved["statistics"]["stable_rank"] is None and saved["pairs"] == []
    assert (tmp_path / "inter-class.png").stat().st_size > 1000


def test_the_pass_collects_what_the_pure_functions_give():
    torch.manual_seed(0)
    head = StructuredHead(4, 3)
    with torch.no_grad():
        head.P.normal_()
        head.E.normal_(std=0.5)
    collected = hm.InterClassPass(head)
    scores = [torch.randn(5, 4, 3), torch.randn(2, 4, 3)]
    labels = [torch.randint(0, 4, (5,)), torch.randint(0, 4, (2,))]
    for z, y in zip(scores, labels, strict=True):
        collected.observe(SimpleNamespace(scores=z, logits=head(z)), y)
    base = torch.cat([head.base_logits(z) for z in scores]).detach()
    inter = head.E.detach()
    assert collected.base_predictions.tolist() == base.argmax(1).tolist()
    assert collected.predictions.tolist() == torch.cat([head(z) for z in scores]).argmax(1).tolist()
    changed = float(hm.changed_predictions(base, inter).float().mean())
    assert collected.effect().changed == pytest.approx(changed)
    assert collected.effect().mean_correction == pytest.approx(
        float(hm.relative_corrections(base, inter).mean()), rel=1e-5
    )
    with pytest.raises(ValueError):
        hm.InterClassPass(Mean())


# ------------------------------------------------------------- a trained run, explained

CLASSES = ("red disc", "green & square", "blue <stripes>", "grey")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """rvp and rvp-no-p, 2 epochs on a tiny folder dataset (head_lr 0.05 so that E matters)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
        root = tmp_path_factory.mktemp("heads")
        data = make_folder_dataset(
            root / "data", classes=CLASSES, counts=(("train", 3), ("val", 1), ("test", 3))
        )
        made = {}
        for method in ("rvp", "rvp-no-p"):
            config = quick_config(data, method, epochs=2, shots=3, batch_size=6, m=4, head_lr=0.05)
            fit(config, root / method)
            made[method] = root / method
        yield made


@pytest.fixture(scope="module")
def loaded(runs, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
        return {
            method: load_run_data(
                summarise(run_dir, "run1"), Options(device="cpu"), BackboneCache(), lambda _: None
            )
            for method, run_dir in runs.items()
        }


def _saved_head(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir)["state"]
    return {k.split(".")[-1]: v.float() for k, v in state.items() if k.startswith("aggregator.")}


def _recomputed(data):
    """f and the model's logits over the report's test images, in one batch like the report's."""
    from reprogram.data.images import as_float

    model = data.model
    with torch.no_grad():
        output = model(as_float(data.images.pixels))
        return model.aggregator.base_logits(output.scores).float(), output.logits.float()


def test_intra_section_is_softmax_of_the_saved_p(loaded, runs):
    data = loaded["rvp"]
    view = compute_intra(data)
    p_tilde = torch.softmax(_saved_head(runs["rvp"])["P"], dim=-1)
    assert float((p_tilde - 0.25).abs().max()) > 1e-3  # P trained away from uniform
    torch.testing.assert_close(torch.from_numpy(view.weights), p_tilde)
    torch.testing.assert_close(torch.from_numpy(view.effective), hm.effective_counts(p_tilde))
    means = data.attribution.description_means
    for c, (name, ranks) in enumerate(view.descriptions.ranks):
        assert name == data.classnames[c]
        order = hm.rank_descriptions(p_tilde[c].tolist(), means[c].tolist(), 5)
        assert [r.index for r in ranks] == order
        assert [r.text for r in ranks] == [data.model.bank.texts[c][j] for j in order]
    assert compute_intra(loaded["rvp-no-p"]) is None  # no P: the PRM section's view stays


def test_inter_section_numbers_are_the_functions_of_the_saved_e(loaded, runs):
    for method, data in loaded.items():
        view = compute_inter(data)
        inter = _saved_head(runs[method])["E"]
        assert float(inter.abs().max()) > 1e-3, method
        torch.testing.assert_close(torch.from_numpy(view.matrix), inter)
        stats = view.statistics
        assert stats.stable_rank == pytest.approx(hm.stable_rank(inter), rel=1e-5)
        assert stats.diagonal_fraction == pytest.approx(hm.diagonal_fraction(inter), rel=1e-5)
        assert stats.r90_over_c == hm.r90_over_classes(data.model.text_features.cpu())
        assert stats.classes == len(CLASSES) and 1 <= stats.r90 <= len(CLASSES)
        expected = hm.strongest_pairs(inter, PAIRS)
        assert [(r.pair.row, r.pair.column) for r in view.pairs] == [
            (p.row, p.column) for p in expected
        ]
        assert [r.row_name for r in view.pairs] == [data.classnames[p.row] for p in expected]
        base, logits = _recomputed(data)
        torch.testing.assert_close(hm.mixed_logits(base, inter), logits, rtol=1e-4, atol=1e-4)
        effect = view.effect
        assert effect.images == len(CLASSES) * 3
        changed = hm.changed_predictions(base, inter)
        assert effect.changed == pytest.approx(float(changed.float().mean()))
        assert effect.mean_correction == pytest.approx(
            float(hm.relative_corrections(base, inter).mean()), rel=1e-4
        )
        labels = data.images.labels
        assert effect.base_accuracy == pytest.approx(
            float((base.argmax(1) == labels).float().mean())
        )
        assert effect.accuracy == pytest.approx(data.attribution.accuracy)
        for row in view.pairs:
            a, b = row.pair.row, row.pair.column
            assert row.confusions_without_e == hm.pair_confusions(labels, base.argmax(1), a, b)
            assert row.confusions_with_e == hm.pair_confusions(labels, logits.argmax(1), a, b)


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
        out = tmp_path_factory.mktemp("explained-heads") / "report"
        args = [str(runs["rvp"]), str(runs["rvp-no-p"]), "--out", str(out), "--quiet"]
        assert cli("explain", *args, "--device", "cpu") == 0
        return out / "index.html"


def test_report_files_hold_the_sections_numbers(report, loaded, runs):
    from test_report import Page

    page = Page(report.read_text(encoding="utf-8"))
    assert {"run1-intra", "run1-inter", "run2-prm", "run2-inter"} <= page.ids
    assert not {"run1-prm", "run2-intra"} & page.ids  # P̃ replaces the PRM view; no P, no P̃
    for src in page.images:
        assert (report.parent / src).is_file(), src
    assert (report.parent / "run1-rvp" / "intra-weights.png").is_file()
    for number, method in ((1, "rvp"), (2, "rvp-no-p")):
        folder = report.parent / f"run{number}-{method}"
        saved = json.loads((folder / "inter-class.json").read_text())
        inter = _saved_head(runs[method])["E"]
        assert saved["statistics"]["stable_rank"] == pytest.approx(hm.stable_rank(inter), rel=1e-5)
        assert saved["statistics"]["r90_over_c"] == pytest.approx(
            hm.r90_over_classes(loaded[method].model.text_features.cpu())
        )
        base, _ = _recomputed(loaded[method])
        assert saved["effect"]["changed"] == pytest.approx(
            float(hm.changed_predictions(base, inter).float().mean())
        )
        with (folder / "inter-class.csv").open(encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        assert rows[0][1:] == list(loaded[method].classnames)
        table = torch.tensor([[float(v) for v in row[1:]] for row in rows[1:]])
        torch.testing.assert_close(table, inter, rtol=1e-5, atol=1e-8)
    with (report.parent / "run1-rvp" / "intra-weights.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    p_tilde = torch.softmax(_saved_head(runs["rvp"])["P"], dim=-1)
    assert len(rows) == p_tilde.numel()
    values = torch.tensor([float(r["p_tilde"]) for r in rows]).view_as(p_tilde)
    torch.testing.assert_close(values, p_tilde, rtol=0, atol=1e-6)
    assert "blue &lt;stripes&gt;" in report.read_text(encoding="utf-8")


def test_without_test_images_e_is_shown_and_the_effect_says_why(runs, tmp_path):
    from test_report import Page

    moved = tmp_path / "moved-run"
    shutil.copytree(runs["rvp"], moved)
    checkpoint = torch.load(moved / "checkpoint.pt", weights_only=False)
    checkpoint["config"]["data"]["dataset"] = f"folder:{tmp_path / 'gone'}"
    torch.save(checkpoint, moved / "checkpoint.pt")
    options = Options(device="cpu")
    data = load_run_data(summarise(moved, "run1"), options, BackboneCache(), lambda _: None)
    assert data.images is None and data.inter_class is None
    view = compute_inter(data)
    assert view.effect is None and view.effect_reason == data.image_reason
    inter = _saved_head(runs["rvp"])["E"]
    assert view.statistics.stable_rank == pytest.approx(hm.stable_rank(inter), rel=1e-5)
    assert all(r.confusions_with_e is None for r in view.pairs)
    assert compute_intra(data).means is None  # P̃ needs no images
    path = explain([moved], tmp_path / "out", options)
    page = Page(path.read_text(encoding="utf-8"))
    assert {"run1-intra", "run1-inter"} <= page.ids
    saved = json.loads((path.parent / "run1-rvp" / "inter-class.json").read_text())
    assert saved["effect"] is None and saved["statistics"]["classes"] == len(CLASSES)


def test_heads_report_in_headless_chromium(request, tmp_path):
    from test_report import ARTIFACTS, IMAGES_CHECK, DevTools, Page, _chromium

    executable = _chromium()
    if executable is None:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install chromium): "
            "the browser check of the head sections is skipped"
        )
    report = request.getfixturevalue("report")
    browser = DevTools(executable, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        browser.open_page()
        problems = browser.visit(report.as_uri())
        state = json.loads(browser.evaluate(IMAGES_CHECK))
        visible = browser.evaluate(
            "['run1-intra', 'run1-inter', 'run2-inter'].map(id => "
            "document.getElementById(id).getBoundingClientRect().height)"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "report-heads-screenshot.png"
        browser.screenshot(screenshot)
    finally:
        browser.close()
    copy = ARTIFACTS / "report-heads"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(report.parent, copy)
    assert problems == [], problems
    expected = len(Page(report.read_text(encoding="utf-8")).images)
    assert state["count"] == expected and state["broken"] == [], state
    assert state["ok"] == f"{expected}/{expected}", state
    assert all(height > 100 for height in visible), visible  # the sections are laid out
    assert screenshot.stat().st_size > 10_000
