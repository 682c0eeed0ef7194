"""Resumable description generation: every answer is on disk as soon as it arrives.

The output files are the only state. A class counts as done once its file holds ``samples`` valid
sentences (``MIN_DESCRIPTION_CHARS`` or longer); a rerun asks only for what is missing, class by
class, so a crash, a kill or a 401 never costs paid answers twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reprogram.errors import ReprogramError
from reprogram.storage.files import atomic_write_json, ensure_dir
from reprogram.text.describe.classes import validate_classes
from reprogram.text.describe.client import Completion, EndpointError, Usage
from reprogram.text.describe.manifest import MANIFEST_NAME, claim_files
from reprogram.text.describe.prompts import (
    ATTRIBUTE_SAMPLES,
    CAUSE_PROMPT,
    CAUSE_SAMPLES,
    SYSTEM_PROMPT,
    PromptSet,
    attribute_sets,
    cause_sets,
    clean_answer,
)
from reprogram.text.descriptions import (
    MIN_DESCRIPTION_CHARS,
    read_description_file,
    valid_sentences,
)

MODES = ("causes", "attributes")


class Completer(Protocol):
    """What the generator needs from a client (``text.describe.client.ChatClient``)."""

    model: str
    base_url: str
    usage: Usage

    def complete(self, prompt: str, **options: Any) -> Completion:
        """``n`` answers to ``prompt``; the options are ``ChatClient.complete``'s."""
        ...


@dataclass(frozen=True)
class Sampling:
    """Request settings; the defaults are the papers'."""

    temperature: float = 0.99
    max_tokens: int = 50
    stop: tuple[str, ...] = (".",)
    system: str | None = SYSTEM_PROMPT
    n_per_request: int | None = None  # None: ask for all missing answers at once
    max_failed_requests: int = 3  # per class: requests bringing no valid answer before giving up

    def __post_init__(self) -> None:
        if self.n_per_request is not None and self.n_per_request < 1:
            raise ReprogramError("n_per_request must be at least 1")
        if self.max_failed_requests < 1:
            raise ReprogramError("max_failed_requests must be at least 1")
        if self.max_tokens < 1:
            raise ReprogramError("max_tokens must be at least 1")


@dataclass(frozen=True)
class ProgressInfo:
    """Passed to ``on_progress`` after every request and every finished class."""

    done: int  # (file, class) pairs finished, complete or given up
    total: int
    complete: int
    usage: Usage
    current: str = ""


@dataclass
class GenerationResult:
    """What a run left on disk."""

    files: list[Path]
    total: int  # (file, class) pairs
    complete: int
    incomplete: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> {class: valid}
    usage: Usage = field(default_factory=Usage)
    source: str = "llm"
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete == self.total


def prompt_sets(
    mode: str,
    key: str,
    causes: Sequence[str] = (),
    *,
    samples: int | None = None,
    prompt: str | None = None,
    attributes: Sequence[str] = ("des", "dist"),
) -> list[PromptSet]:
    """The output files of a run: one per cause (``causes``) or per attribute kind."""
    if samples is not None and samples < 1:
        raise ReprogramError("samples must be at least 1")
    if mode == "causes":
        return cause_sets(
            key, causes, samples=samples or CAUSE_SAMPLES, template=prompt or CAUSE_PROMPT
        )
    if mode == "attributes":
        if prompt and len(attributes) != 1:
            raise ReprogramError(
                "a custom prompt in attribute mode needs a single kind (des or dist)"
            )
        templates = {attributes[0]: prompt} if prompt else None
        return attribute_sets(
            key, attributes, samples=samples or ATTRIBUTE_SAMPLES, templates=templates
        )
    raise ReprogramError(f"unknown mode '{mode}' (known: {', '.join(MODES)})")


class DescriptionFile:
    """One ``{class: [sentences]}`` file being filled; every change is written atomically."""

    def __init__(self, path: Path, classes: Sequence[str]) -> None:
        self.path = path
        self.classes = list(classes)
        self.data: dict[str, list[str]] = read_description_file(path) if path.exists() else {}
        self._lock = threading.Lock()

    def valid_count(self, classname: str) -> int:
        with self._lock:
            return len(valid_sentences(self.data.get(classname, [])))

    def add(self, classname: str, sentences: Sequence[str]) -> None:
        with self._lock:
            self.data[classname] = [*self.data.get(classname, []), *sentences]
            atomic_write_json(self.path, self._ordered())

    def write(self) -> None:
        with self._lock:
            atomic_write_json(self.path, self._ordered())

    def _ordered(self) -> dict[str, list[str]]:
        """Classes in label order; classes not in the list (kept, never dropped) at the end."""
        known = {c: self.data[c] for c in self.classes if c in self.data}
        return {**known, **{c: s for c, s in self.data.items() if c not in known}}


def generate_descriptions(
    classes: Sequence[str],
    task: str,
    causes: Sequence[str] = (),
    out_dir: str | Path = ".",
    *,
    client: Completer,
    mode: str = "causes",
    key: str = "descriptions",
    samples: int | None = None,
    prompt: str | None = None,
    attributes: Sequence[str] = ("des", "dist"),
    sampling: Sampling | None = None,
    workers: int = 1,
    on_progress: Callable[[ProgressInfo], None] | None = None,
) -> GenerationResult:
    """Ask ``client`` for descriptions of every class and write them under ``out_dir``.

    ``mode="causes"`` writes ``<key>_cse_<n>.json`` per cause (DVP-cse; 20 per class);
    ``mode="attributes"`` writes ``<key>_des.json`` / ``<key>_dist.json`` (DVP-cls, AttrVR; 25).
    Files already present are resumed: only missing answers are requested.
    """
    classes = validate_classes(classes)
    sets = prompt_sets(mode, key, causes, samples=samples, prompt=prompt, attributes=attributes)
    return run_prompt_sets(
        classes,
        task,
        sets,
        out_dir,
        client=client,
        sampling=sampling or Sampling(),
        workers=workers,
        on_progress=on_progress,
    )


def run_prompt_sets(
    classes: Sequence[str],
    task: str,
    sets: Sequence[PromptSet],
    out_dir: str | Path,
    *,
    client: Completer,
    sampling: Sampling,
    workers: int = 1,
    on_progress: Callable[[ProgressInfo], None] | None = None,
) -> GenerationResult:
    """Fill every (file, class) pair that lacks valid answers, ``workers`` classes at a time."""
    if workers < 1:
        raise ReprogramError("workers must be at least 1")
    out = Path(out_dir)
    created = _missing_parts(out)
    ensure_dir(out, "--out")
    had_manifest = (out / MANIFEST_NAME).exists()
    files = {s.filename: DescriptionFile(out / s.filename, classes) for s in sets}  # reads
    warnings = claim_files(
        out, {s.filename: _manifest_entry(s, task, client, sampling) for s in sets}
    )
    try:
        return _run(
            classes, task, sets, files, out, client, sampling, workers, on_progress, warnings
        )
    except BaseException:
        if not any(f.path.exists() for f in files.values()):  # no answer was written
            _remove_empty(out, created, had_manifest)
        raise


def _missing_parts(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet (deepest first)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(out: Path, created: list[Path], had_manifest: bool) -> None:
    """Undo what a run that received nothing wrote: its manifest and the folders it made."""
    if not had_manifest:
        (out / MANIFEST_NAME).unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: something else is there, keep it
            return


def _run(
    classes: Sequence[str],
    task: str,
    sets: Sequence[PromptSet],
    files: dict[str, DescriptionFile],
    out: Path,
    client: Completer,
    sampling: Sampling,
    workers: int,
    on_progress: Callable[[ProgressInfo], None] | None,
    warnings: list[str],
) -> GenerationResult:
    todo = [(s, c) for s in sets for c in classes if files[s.filename].valid_count(c) < s.samples]
    total = len(sets) * len(classes)
    counter = _Counter(total, total - len(todo), client.usage, on_progress)
    stop = threading.Event()
    batching = _Batching(sampling.n_per_request)
    counter.report("")

    def job(pset: PromptSet, classname: str) -> None:
        _fill_class(
            files[pset.filename], pset, classname, task, client, sampling, batching, stop, counter
        )

    if workers == 1:
        for pset, classname in todo:
            job(pset, classname)
    else:
        _run_parallel(job, todo, workers, stop)
    notes = warnings + batching.warnings + counter.warnings
    return _result(sets, files, classes, client.usage, notes, out)


def _run_parallel(
    job: Callable[[PromptSet, str], None],
    todo: Sequence[tuple[PromptSet, str]],
    workers: int,
    stop: threading.Event,
) -> None:
    """Run jobs on a thread pool; on the first error (or Ctrl-C) stop taking new requests."""

    def guarded(pset: PromptSet, classname: str) -> None:
        if stop.is_set():
            return
        try:
            job(pset, classname)
        except BaseException:
            stop.set()  # no worker starts another request once one has failed
            raise

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(guarded, pset, c) for pset, c in todo]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise


def _fill_class(
    file: DescriptionFile,
    pset: PromptSet,
    classname: str,
    task: str,
    client: Completer,
    sampling: Sampling,
    batching: _Batching,
    stop: threading.Event,
    counter: _Counter,
) -> None:
    """Request answers for one class until it has ``pset.samples`` valid ones, saving each batch.

    Servers may return fewer choices than ``n`` (Ollama returns one), so the loop asks again for
    the remainder; it gives up after ``max_failed_requests`` requests that added nothing. A server
    that refuses ``n > 1`` with HTTP 400 (llama.cpp) is asked one answer at a time from then on.
    """
    prompt = pset.prompt(classname, task)
    failed = 0
    too_short: list[str] = []  # answers dropped for being under MIN_DESCRIPTION_CHARS
    needed = pset.samples - file.valid_count(classname)
    while needed > 0 and failed < sampling.max_failed_requests:
        if stop.is_set():
            return
        n = batching.n(needed)
        try:
            completion = client.complete(
                prompt,
                n=n,
                temperature=sampling.temperature,
                max_tokens=sampling.max_tokens,
                stop=sampling.stop,
                system=sampling.system,
            )
        except EndpointError as err:
            if err.status != 400 or n == 1:
                raise
            batching.refused(n, err)
            continue
        answers = [clean_answer(t, sampling.stop, pset.suffix) for t in completion.texts]
        too_short += [a for a in answers if len(a) < MIN_DESCRIPTION_CHARS]
        answers = [a for a in answers if len(a) >= MIN_DESCRIPTION_CHARS][:needed]
        if answers:
            file.add(classname, answers)
            needed -= len(answers)
        else:
            failed += 1
        counter.report(f"{pset.filename} {classname}")
    if needed > 0 and too_short:
        counter.warn(
            f"{pset.filename} {classname}: {len(too_short)} answers were shorter than "
            f"{MIN_DESCRIPTION_CHARS} characters (e.g. {too_short[0]!r}) and were not kept; "
            "raise --max-tokens, or check --stop and the prompt"
        )
    counter.finish(needed <= 0, f"{pset.filename} {classname}")


class _Batching:
    """How many answers to ask per request; drops to one if the server refuses ``n > 1``."""

    def __init__(self, n_per_request: int | None) -> None:
        self.cap = n_per_request
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def n(self, needed: int) -> int:
        return min(needed, self.cap or needed)

    def refused(self, n: int, err: EndpointError) -> None:
        with self._lock:
            if self.cap != 1:
                self.cap = 1
                self.warnings.append(
                    f"the server refused n={n} ({err}); asked one answer per request instead "
                    "(pass --n-per-request 1 to skip the refused request)"
                )


class _Counter:
    """Thread-safe progress bookkeeping, forwarded to the ``on_progress`` callback."""

    def __init__(
        self, total: int, done: int, usage: Usage, callback: Callable[[ProgressInfo], None] | None
    ) -> None:
        self.total, self.done, self.complete = total, done, done
        self.usage = usage
        self.callback = callback
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(message)

    def finish(self, complete: bool, current: str) -> None:
        with self._lock:
            self.done += 1
            self.complete += complete
        self.report(current)

    def report(self, current: str) -> None:
        if self.callback is not None:
            with self._lock:
                self.callback(
                    ProgressInfo(self.done, self.total, self.complete, self.usage, current)
                )


def _manifest_entry(
    pset: PromptSet, task: str, client: Completer, sampling: Sampling
) -> dict[str, Any]:
    return {
        "source": "llm",
        "cause": pset.cause or None,
        "model": getattr(client, "model", None),
        "base_url": getattr(client, "base_url", None),
        "prompt": pset.template.replace("{cause}", pset.cause).replace("{task}", task),
        "system": sampling.system,
        "samples": pset.samples,
        "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens,
        "stop": list(sampling.stop),
    }


def _result(
    sets: Sequence[PromptSet],
    files: dict[str, DescriptionFile],
    classes: Sequence[str],
    usage: Usage,
    warnings: list[str],
    out: Path,
) -> GenerationResult:
    incomplete: dict[str, dict[str, int]] = {}
    for pset in sets:
        counts = {c: files[pset.filename].valid_count(c) for c in classes}
        short = {c: k for c, k in counts.items() if k < pset.samples}
        if short:
            incomplete[pset.filename] = short
    missing = sum(len(v) for v in incomplete.values())
    total = len(sets) * len(classes)
    return GenerationResult(
        files=[out / s.filename for s in sets],
        total=total,
        complete=total - missing,
        incomplete=incomplete,
        usage=usage,
        warnings=warnings,
    )
