"""The papers' prompts and file naming: one :class:`PromptSet` per output file."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from reprogram.errors import ReprogramError

SYSTEM_PROMPT = "You are a helpful assistant."  # DVP's system message
CAUSE_PROMPT = "Describe the {cause} of the {task} image '{class}'"  # DVP-cse
DESCRIPTIVE_PROMPT = "Describe the appearance of the {task} {class}"  # AttrVR, DVP-cls
DISTINCTIVE_PROMPT = "Describe the unique appearance of {article} {class} from the other {task}"
CAUSE_SAMPLES = 20
ATTRIBUTE_SAMPLES = 25
ATTRIBUTE_KINDS = {"des": DESCRIPTIVE_PROMPT, "dist": DISTINCTIVE_PROMPT}
PLACEHOLDERS = frozenset({"class", "task", "cause", "article"})


@dataclass(frozen=True)
class PromptSet:
    """One output file: its name, the prompt template, answers wanted per class, and a suffix
    appended to each answer (AttrVR's attribute files end their sentences with '.')."""

    filename: str
    template: str
    samples: int
    cause: str = ""
    suffix: str = ""

    def prompt(self, classname: str, task: str) -> str:
        """The prompt for one class (dots are dropped from the name, as both papers do)."""
        name = classname.replace(".", "")
        return self.template.format(
            **{"class": name, "task": task, "cause": self.cause, "article": article(name)}
        )


def article(word: str) -> str:
    """'an' before a vowel letter, else 'a' (the papers' rule)."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def check_template(template: str) -> str:
    """Reject templates with unknown or positional placeholders before any request is paid for."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ReprogramError(f"bad prompt template {template!r}: {err}") from None
    unknown = sorted(f or "{}" for f in fields - PLACEHOLDERS)
    if unknown:
        raise ReprogramError(
            f"bad prompt template {template!r}: unknown placeholder(s) {', '.join(unknown)} "
            f"(known: {{class}}, {{task}}, {{cause}}, {{article}})"
        )
    if "class" not in fields:
        raise ReprogramError(f"prompt template {template!r} must contain {{class}}")
    return template


def cause_sets(
    key: str, causes: Sequence[str], *, samples: int = CAUSE_SAMPLES, template: str = CAUSE_PROMPT
) -> list[PromptSet]:
    """DVP-cse: one file ``<key>_cse_<n>.json`` per cause, n from 1."""
    if not causes:
        raise ReprogramError("no causes given (e.g. --causes 'pattern,contrast,regularity')")
    check_template(template)
    return [
        PromptSet(f"{key}_cse_{i}.json", template, samples, cause=cause)
        for i, cause in enumerate(causes, start=1)
    ]


def attribute_sets(
    key: str,
    kinds: Sequence[str] = ("des", "dist"),
    *,
    samples: int = ATTRIBUTE_SAMPLES,
    templates: dict[str, str] | None = None,
) -> list[PromptSet]:
    """DVP-cls / AttrVR: ``<key>_des.json`` (descriptive) and ``<key>_dist.json`` (distinctive)."""
    templates = {**ATTRIBUTE_KINDS, **(templates or {})}
    sets = []
    for kind in kinds:
        if kind not in ATTRIBUTE_KINDS:
            raise ReprogramError(f"unknown attribute kind '{kind}' (known: des, dist)")
        sets.append(
            PromptSet(f"{key}_{kind}.json", check_template(templates[kind]), samples, suffix=".")
        )
    return sets


def clean_answer(text: str, stop: Sequence[str] = (".",), suffix: str = "") -> str:
    """One answer as stored: cut at the first stop string (in case the server ignored ``stop``),
    whitespace collapsed, ``suffix`` appended."""
    for s in stop:
        if s:
            text = text.split(s, 1)[0]
    text = " ".join(text.split())
    return text + suffix if text else ""


def parse_list(value: str | None) -> list[str]:
    """Split a comma-separated option into stripped, non-empty items."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def file_key(name: str) -> str:
    """A file-name prefix from a free name (e.g. a class file's stem)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "descriptions"
