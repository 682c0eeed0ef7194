"""`reprogram explain`: attribution maths, the numbers of each section, the page in Chromium.

One module fixture trains every method briefly on a tiny folder dataset (random tiny backbone,
56-px input). Each section's ``compute_x`` is checked against the run's own numbers (results.json,
the model's logits); the report is made once through the real CLI and checked as HTML and in a
headless Chromium (skipped when Chromium is not installed). The browser screenshot and a copy of
the report are saved under ``tests/artifacts/`` (``ARTIFACTS`` below).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, make_folder_dataset, quick_config

from reprogram.engine.runs import load_run
from reprogram.engine.train import fit
from reprogram.model import attribution as attr
from reprogram.report.common import select_rows
from reprogram.report.explain import explain
from reprogram.report.load import BackboneCache, Options, RunData, load_run_data, summarise
from reprogram.report.sections.accuracy import compute_accuracy, compute_confusion
from reprogram.report.sections.compare import compute_comparison
from reprogram.report.sections.contributions import SHARE_DEFINITION, compute_contributions
from reprogram.report.sections.curves import compute_curves
from reprogram.report.sections.files import compute_files
from reprogram.report.sections.overview import compute_overview
from reprogram.report.sections.prm import compute_prm
from reprogram.report.sections.prompts import compute_prompts

METHODS = ["zero-shot", "zero-shot-desc", "vp", "ar", "attrvr", "dvp-cse", "dvp-cls"]
# Class names that need escaping in HTML, and one long name.
CLASSES = (
    "red disc",
    "green & square",
    "blue <stripes>",
    "a rather long class name, with comma",
    "grey",
)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished run per method (2 epochs: the PRM-only epoch, then one training epoch)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
        root = tmp_path_factory.mktemp("report")
        data = make_folder_dataset(
            root / "data",
            classes=CLASSES,
            counts=(("train", 2), ("val", 2), ("test", 2)),
            size=(32, 36),
        )
        made = {}
        for method in METHODS:
            fit(quick_config(data, method, epochs=2, shots=2, batch_size=10, m=4), root / method)
            made[method] = root / method
        yield made


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    """The report of every run, made through the real command line."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
        out = tmp_path_factory.mktemp("explained") / "report"
        assert cli("explain", *map(str, runs.values()), "--out", str(out), "--quiet") == 0
        return out / "index.html"


class Page(HTMLParser):
    """The parts of the page the checks need: images, links, ids, text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.scripts_with_src: list[str] = []
        self.stylesheets: list[str] = []
        self.titles: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if "title" in attrs:
            self.titles.append(attrs["title"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "script" and "src" in attrs:
            self.scripts_with_src.append(attrs["src"])
        if tag == "link":
            self.stylesheets.append(attrs.get("href", ""))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


# ------------------------------------------------------------------------ the attribution maths


@pytest.mark.numeric
def test_contributions_add_up_to_the_logits_for_every_method(runs):
    for method, run_dir in runs.items():
        model = load_run(run_dir).model
        images = torch.rand(3, 3, model.image_size, model.image_size)
        with torch.no_grad():
            output = model(images)
        parts = attr.description_contributions(model, output.scores)
        assert parts.shape == output.scores.shape
        torch.testing.assert_close(
            parts.sum(-1), output.logits.float(), atol=1e-4, rtol=1e-4, msg=method
        )
        # the generic gradient rule agrees with each aggregator's explicit weights
        gradient = attr._gradient(model.aggregator, output.scores.float())
        torch.testing.assert_close(
            attr.description_weights(model, output.scores), gradient, msg=method
        )
        per_prompt = attr.prompt_parts(model, parts)
        assert per_prompt.shape[-1] == attr.prompt_count(model)
        torch.testing.assert_close(per_prompt.sum(-1), output.logits.float(), atol=1e-4, rtol=1e-4)


def test_shares_divide_by_the_sum_of_absolute_parts():
    shares = attr.shares(torch.tensor([[3.0, -1.0], [2.0, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(shares, torch.tensor([[0.75, -0.25], [0.5, 0.5], [0.0, 0.0]]))


def test_prompt_parts_follow_each_class_own_groups():
    class Bank:
        groups = torch.tensor([[0, 1, 1], [1, 0, 0]])

    class Prompts:
        count = 2

    class Model:
        bank, prompts = Bank(), Prompts()

    contributions = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    torch.testing.assert_close(
        attr.prompt_parts(Model(), contributions), torch.tensor([[[1.0, 5.0], [11.0, 4.0]]])
    )
    rows = attr.prompt_parts(Model(), torch.tensor([[4.0, 5.0, 6.0]]), torch.tensor([1]))
    torch.testing.assert_close(rows, torch.tensor([[11.0, 4.0]]))


def test_drivers_name_a_weighted_description_of_the_top_class(runs):
    model = load_run(runs["dvp-cse"]).model
    weights = model.aggregator.prm.weights
    weights.zero_()
    weights[:, 0] = 0.5  # cause 1
    weights[:, -1] = 0.5  # cause 3
    images = torch.rand(4, 3, model.image_size, model.image_size)
    with torch.no_grad():
        output = model(images)
    drivers = attr.top_class_drivers(model, output.scores, output.logits)
    assert [d.class_index for d in drivers] == output.logits.argmax(1).tolist()
    for driver in drivers:
        assert driver.description_index in (0, model.bank.per_class - 1)  # only weighted ones drive
        assert driver.description == model.bank.texts[driver.class_index][driver.description_index]
        assert driver.prompt in (model.bank.group_names[0], model.bank.group_names[-1])
        assert set(driver.prompt_shares) == set(model.bank.group_names)
        assert driver.prompt_shares[model.bank.group_names[1]] == 0.0
        assert abs(sum(abs(v) for v in driver.prompt_shares.values()) - 1) < 1e-5
    template = load_run(runs["ar"]).model
    with torch.no_grad():
        output = template(images)
    (driver, *_) = attr.top_class_drivers(template, output.scores, output.logits)
    assert driver.description is None and driver.prompt is None and driver.prompt_shares is None


def test_top_descriptions_rank_by_prm_weight(runs):
    model = load_run(runs["dvp-cls"]).model
    weights = model.aggregator.prm.weights
    weights.fill_(0.0)
    weights[1, 2], weights[1, 0] = 0.7, 0.3
    ranked = attr.top_descriptions(model, 1, count=3)
    assert [r.index for r in ranked[:2]] == [2, 0]
    assert ranked[0].text == model.bank.texts[1][2] and ranked[0].weight == pytest.approx(0.7)
    mass = attr.group_mass(model)
    torch.testing.assert_close(mass.sum(1)[1], torch.tensor(1.0))


def test_select_rows_keeps_extremes_of_long_lists():
    keys = [float(k) for k in range(400)]
    rows, note = select_rows(keys, 40)
    assert len(rows) == 40 and rows[:3] == [399, 398, 397] and rows[-1] == 0
    assert note == "showing 40 of 400 classes"
    assert select_rows([1.0, 3.0, 2.0], 40) == ([1, 2, 0], None)


def test_long_class_lists_are_summarised_not_squeezed(tmp_path):
    from PIL import Image

    from reprogram.report import plots

    names = [f"class number {i} with a long name" for i in range(400)]
    accuracy = [(i * 37 % 100) / 100 for i in range(400)]
    path = plots.accuracy_bars(
        tmp_path / "acc.png", names, accuracy, "Test accuracy per class", 40, 0.5
    )
    width, height = Image.open(path).size
    assert height < 2000 and width < 1600  # 41 labelled rows, not 400


# ------------------------------------------------------------------------ each section's numbers


@pytest.fixture(scope="module")
def loaded(runs, tmp_path_factory) -> dict[str, RunData]:
    """Every run as the report's sections see it (model, test images, attribution)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPROGRAM_CACHE", str(tmp_path_factory.getbasetemp() / "reprogram-cache"))
        backbones = BackboneCache()
        return {
            method: load_run_data(
                summarise(run_dir, f"run{i}"), Options(device="cpu"), backbones, lambda _: None
            )
            for i, (method, run_dir) in enumerate(runs.items(), start=1)
        }


def test_every_run_loads_with_its_test_images(loaded):
    for method, data in loaded.items():
        assert data.run is not None and data.images is not None, method
        assert data.summary.notes == [], method
        assert len(data.images) == len(CLASSES) * 2  # the whole test split
        assert data.classnames == sorted(CLASSES)  # a folder dataset's classes


def test_accuracy_sections_equal_results_json(loaded):
    for method, data in loaded.items():
        results = data.summary.results
        view = compute_accuracy(data)
        assert view.skipped is None
        assert view.accuracy == [results["per_class_accuracy"][c] for c in data.classnames], method
        assert view.counts == [2] * len(CLASSES) and view.overall == results["test_accuracy"]
        assert [view.accuracy[c] for c in view.worst_first] == sorted(view.accuracy)
        # the attribution pass re-runs the model on the same test images: the same predictions
        overview = compute_overview(data)
        assert overview.recomputed_count == results["test_count"] == 10
        assert overview.recomputed_accuracy == pytest.approx(results["test_accuracy"], abs=1e-6)
        per_class = [
            float((data.attribution.predictions[data.attribution.labels == c] == c).float().mean())
            for c in range(len(CLASSES))
        ]
        assert per_class == pytest.approx(view.accuracy, abs=1e-6), method
        files = compute_files(data)
        assert [float(row[2]) for row in files.class_rows] == pytest.approx(view.accuracy)
        assert [row[1] for row in files.class_rows] == view.counts


def test_confusion_section_counts_every_test_image(loaded):
    data = loaded["dvp-cse"]
    matrix = data.summary.results["test_confusion"]
    view = compute_confusion(data)
    assert view.full and view.row_names == view.col_names == data.classnames
    assert view.counts.tolist() == matrix and view.totals.tolist() == [2] * len(CLASSES)
    off_diagonal = sum(matrix[t][p] for t in range(5) for p in range(5) if t != p)
    assert sum(n for _, _, n, _ in view.pairs) == off_diagonal
    assert all(f == pytest.approx(n / 2) for _, _, n, f in view.pairs)
    data.options.max_classes = 4  # 5 classes > 4: the worst classes' rows only
    try:
        few = compute_confusion(data, worst=2, columns=3)
    finally:
        data.options.max_classes = Options().max_classes
    assert not few.full and len(few.row_names) == 2 and len(few.col_names) <= 4
    assert few.counts.sum(axis=1).tolist() == few.totals.tolist()  # "(other classes)" sums the rest


def test_prm_section_rows_sum_to_one(loaded):
    for method in ("dvp-cse", "dvp-cls"):
        data = loaded[method]
        view = compute_prm(data)
        assert view.skipped is None and view.no_prm_reason is None
        matrix = view.matrix
        omega = data.model.aggregator.prm.weights.detach().float().cpu().numpy()
        assert matrix.rows == list(range(len(CLASSES))) and matrix.selection is None
        assert matrix.weights.sum(axis=1) == pytest.approx([1.0] * len(CLASSES), abs=1e-5)
        assert matrix.mass.sum(axis=1) == pytest.approx([1.0] * len(CLASSES), abs=1e-5)
        assert matrix.weights.tolist() == omega.tolist()
        # sorted per row by group, then by weight (highest first), as the hover table shows it
        assert sorted(matrix.sorted_weights[0].tolist()) == sorted(omega[0].tolist())
        assert (matrix.sorted_groups[:, 1:] >= matrix.sorted_groups[:, :-1]).all()
        hovered = "\n".join(t for row in matrix.hover for t in row)
        assert all(text in hovered for row in data.model.bank.texts for text in row)
        table = view.descriptions
        assert [name for name, _ in table.ranks] == data.classnames and not table.folded
        for c, (_, ranks) in enumerate(table.ranks):
            assert len(ranks) == min(data.options.top_descriptions, data.model.bank.per_class)
            assert [r.weight for r in ranks] == sorted((r.weight for r in ranks), reverse=True)
            assert ranks[0].weight == pytest.approx(float(omega[c].max()))
    assert compute_prm(loaded["dvp-cse"]).matrix.group_names == ["cse_1", "cse_2", "cse_3"]
    assert compute_prm(loaded["dvp-cls"]).matrix.group_names[0] == "cluster 1"


def test_methods_without_a_prm_rank_descriptions_by_contribution(loaded):
    for method in ("zero-shot", "vp", "ar"):
        view = compute_prm(loaded[method])
        assert view.matrix is None and view.no_prm_reason and not view.has_descriptions, method
        assert view.descriptions is None
    for method in ("zero-shot-desc", "attrvr"):
        data = loaded[method]
        view = compute_prm(data)
        assert view.matrix is None and view.no_prm_reason and view.has_descriptions, method
        means = data.attribution.description_means
        for c, (_, ranks) in enumerate(view.descriptions.ranks):
            assert all(r.weight is None for r in ranks)
            values = [r.contribution for r in ranks]
            assert values == sorted(values, reverse=True)
            assert values[0] == pytest.approx(float(means[c].max()))


def test_contribution_shares_split_each_class_logit(loaded):
    for method in ("zero-shot", "zero-shot-desc", "vp", "ar", "attrvr"):
        assert compute_contributions(loaded[method]).skipped, method  # one prompt or none
    for method in ("dvp-cse", "dvp-cls"):
        data = loaded[method]
        view = compute_contributions(data)
        attribution = data.attribution
        assert view.skipped is None and len(view.group_names) == 3
        image_shares = attribution.image_shares
        assert image_shares.abs().sum(1).tolist() == pytest.approx([1.0] * 10, abs=1e-5)
        for c in range(len(CLASSES)):
            mine = attribution.labels == c
            torch.testing.assert_close(
                torch.as_tensor(view.shares[c]), image_shares[mine].mean(0), atol=1e-6, rtol=0
            )
        # a share is the prompt's part of the true-class logit over the sum of absolute parts
        model = data.model
        with torch.no_grad():
            from reprogram.data.images import as_float

            output = model(as_float(data.images.pixels))
        own = attr.description_contributions(model, output.scores)[
            torch.arange(10), attribution.labels
        ]
        parts = attr.prompt_parts(model, own, attribution.labels)
        torch.testing.assert_close(image_shares, attr.shares(parts), atol=1e-5, rtol=0)
        assert sorted(view.rows) == view.present == list(range(len(CLASSES)))
        assert [d.class_index for d in view.ranking] == sorted(
            range(5), key=lambda c: (-float(view.shares[c].max()), c)
        )
        assert all(d.dominated == (d.share >= view.threshold) for d in view.ranking)
        assert sum(view.dominated_per_prompt().values()) == len(view.dominated)
        files = compute_files(data)
        assert files.has_shares and len(files.class_header) == 3 + 3
        written = [[float(v) for v in row[3:]] for row in files.class_rows]
        np.testing.assert_allclose(written, view.shares, atol=1e-6)


def test_prompt_section_shows_frames_and_the_drivers_of_examples(loaded):
    zero = compute_prompts(loaded["zero-shot"])
    assert zero.kind == "none" and zero.frames == [] and len(zero.examples) == 4
    for method, count in (("vp", 1), ("ar", 1), ("dvp-cse", 3), ("dvp-cls", 3)):
        data = loaded[method]
        view = compute_prompts(data)
        assert view.skipped is None and len(view.frames) == count, method
        for frame in view.frames:
            assert float(frame.frame.min()) >= 0 and float(frame.frame.max()) <= 1
            assert frame.stretched.shape == frame.frame.shape
        assert len(view.examples) == 4
        truths = [e.truth for e in view.examples]
        assert len(set(truths)) == 4  # one image per class first
        for example in view.examples:
            assert len(example.prompted) == count
            assert 0 < example.probability <= 1
            assert example.predicted == data.classnames[example.driver.class_index]


def test_curves_follow_metrics_jsonl(loaded):
    assert compute_curves(loaded["zero-shot"]).skipped  # nothing trained
    data = loaded["dvp-cse"]
    view = compute_curves(data)
    assert view.skipped is None and len(view.history) == 2
    assert view.selected_epoch == data.summary.results["selected_epoch"]
    speeds = [r["images_per_s"] for r in view.history if not r.get("estimate_only")]
    assert view.images_per_s == pytest.approx(speeds[0]) and len(speeds) == 1


def test_comparison_subtracts_the_reference_per_class(loaded):
    summaries = [data.summary for data in loaded.values()]
    view = compute_comparison(summaries, Options())
    assert view.seed_table is None  # one seed per method
    assert [d.method for d in view.differences] == METHODS[1:]
    base = loaded["zero-shot"].accuracy
    for d in view.differences:
        assert d.reference == "zero-shot" and d.seeds == (1, 1)
        mine = loaded[d.method].accuracy
        assert d.diff.tolist() == pytest.approx([a - b for a, b in zip(mine, base, strict=True)])
        assert d.better + d.worse <= len(CLASSES)
    other = compute_comparison(summaries, Options(reference="vp"))
    assert {d.reference for d in other.differences} == {"vp"}
    assert "vp" not in [d.method for d in other.differences]


# ----------------------------------------------------------------------------- the page


@pytest.mark.slow
def test_report_is_self_contained_and_covers_every_run(report, runs):
    html = report.read_text(encoding="utf-8")
    page = Page(html)
    assert page.images, "no images in the report"
    for src in page.images:
        assert not src.startswith(("http:", "https:", "//", "data:")), src
        assert (report.parent / src).is_file(), f"missing image {src}"
    for href in page.links:
        assert not href.startswith(("http:", "https:", "//")), href
        if href.startswith("#"):
            assert href[1:] in page.ids, f"dangling anchor {href}"
        else:
            assert (report.parent / href).is_file(), f"missing file {href}"
    assert not page.scripts_with_src and not page.stylesheets
    assert "@import" not in html and "url(" not in html
    assert {"compare", "definitions"} | {f"run{i}" for i in range(1, 8)} <= page.ids
    for number in range(1, 8):
        for part in ("prompts", "prm", "contributions", "accuracy", "confusion", "curves"):
            assert f"run{number}-{part}" in page.ids
    # escaped class names survive as text
    assert "blue <stripes>" not in html and "blue &lt;stripes&gt;" in html
    assert SHARE_DEFINITION in page.plain
    # one difference figure per method against the first run's
    assert sorted(p.name for p in report.parent.glob("diff-*.png")) == sorted(
        f"diff-{i}-{m}-vs-zero-shot.png" for i, m in enumerate(METHODS[1:], start=1)
    )
    for method in ("dvp-cse", "dvp-cls"):  # every description can be read on hover
        model = load_run(runs[method]).model
        hovered = "\n".join(page.titles)
        assert all(text in hovered for row in model.bank.texts for text in row)


def test_report_survives_a_missing_dataset_and_summarises_many_classes(runs, tmp_path):
    moved = tmp_path / "moved-run"
    shutil.copytree(runs["dvp-cse"], moved)
    checkpoint = torch.load(moved / "checkpoint.pt", weights_only=False)
    checkpoint["config"]["data"]["dataset"] = f"folder:{tmp_path / 'gone'}"
    torch.save(checkpoint, moved / "checkpoint.pt")
    options = Options(device="cpu", max_classes=4, examples=2)
    data = load_run_data(summarise(moved, "run1"), options, BackboneCache(), lambda _: None)
    assert data.run is not None and data.images is None and data.attribution is None
    assert data.image_reason and data.summary.notes == [data.image_reason]
    prompts = compute_prompts(data)
    assert len(prompts.frames) == 3 and prompts.examples is None  # frames need no test images
    assert compute_contributions(data).skipped == data.image_reason
    prm = compute_prm(data)  # the PRM needs no images either: 2 worst and 2 best classes
    assert len(prm.matrix.rows) == 4 and prm.matrix.selection.startswith("showing 4 of 5")
    assert all(r.contribution is None for _, ranks in prm.descriptions.ranks for r in ranks)
    path = explain([moved, runs["dvp-cls"]], tmp_path / "out", options)
    page = Page(path.read_text(encoding="utf-8"))
    for src in page.images:
        assert (path.parent / src).is_file()
    assert (path.parent / "run1-dvp-cse" / "prompt-1.png").is_file()
    assert not (path.parent / "run1-dvp-cse" / "shares.png").exists()
    assert (path.parent / "run2-dvp-cls" / "shares.png").is_file()


# ----------------------------------------------------------------------------- in a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, executable: str, profile: Path, log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def plumb() -> None:  # in the child: the browser reads fd 3 and writes fd 4
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            close_fds=False,
            preexec_fn=plumb,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for index, seen in enumerate(self.events):
                if seen.get("method") == event:
                    return self.events.pop(index)
            self._receive(max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(event)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "id" not in message:
            self.events.append(message)
        return message

    def open_page(self, width: int = 1400, height: int = 1000) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.send(domain)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def visit(self, url: str) -> list[str]:
        """Load ``url`` and return the console errors, uncaught exceptions and failed loads."""
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        self.send(
            "Runtime.evaluate", {"expression": "1", "awaitPromise": True}
        )  # let load handlers finish
        problems = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                problems.append(
                    "console: "
                    + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                problems.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                problems.append(
                    f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}"
                )
        return problems

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"].get("value")

    def screenshot(self, path: Path, max_height: int = 16000) -> None:
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": size["width"],
            "height": min(size["height"], max_height),
            "scale": 1,
        }
        shot = self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


IMAGES_CHECK = """JSON.stringify({
  ok: document.body.dataset.imagesOk,
  failed: document.body.dataset.imagesFailed,
  count: document.images.length,
  broken: Array.from(document.images)
    .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)
})"""


def test_report_in_headless_chromium(request, tmp_path):
    executable = _chromium()
    if executable is None:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install chromium): "
            "the browser check of the report is skipped"
        )
    report = request.getfixturevalue("report")  # only built when there is a browser
    browser = DevTools(executable, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        browser.open_page()
        # the harness itself must notice a broken image and a console error
        broken = tmp_path / "broken.html"
        broken.write_text(
            '<!DOCTYPE html><html><body><img src="missing.png">'
            '<script>console.error("planted")</script></body></html>'
        )
        problems = browser.visit(broken.as_uri())
        assert any("planted" in p for p in problems) and any(
            "missing.png" in p for p in problems
        ), problems

        problems = browser.visit(report.as_uri())
        state = json.loads(browser.evaluate(IMAGES_CHECK))
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "report-screenshot.png"
        browser.screenshot(screenshot)
    finally:
        browser.close()
    copy = ARTIFACTS / "report"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(report.parent, copy)
    print(f"screenshot: {screenshot}\nreport: {copy / 'index.html'}")
    assert problems == [], problems
    expected = len(Page(report.read_text(encoding="utf-8")).images)
    assert state["count"] == expected and state["broken"] == [], state
    assert state["ok"] == f"{expected}/{expected}" and state["failed"] == "", state
    assert screenshot.stat().st_size > 10_000
