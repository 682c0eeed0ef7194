"""The no-endpoint fallback: descriptions built from class names and cause words by templates.

Weaker than LLM descriptions: every sentence only restates the class name, the task noun and the
cause, so the text bank carries no visual knowledge beyond what CLIP already gets from the class
name; the per-description weights of DVP have near-identical texts to choose from.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from pathlib import Path

from reprogram.text.describe.classes import validate_classes
from reprogram.text.describe.client import Usage
from reprogram.text.describe.generate import DescriptionFile, GenerationResult, prompt_sets
from reprogram.text.describe.manifest import TEMPLATE_NOTE, claim_files
from reprogram.text.describe.prompts import PromptSet

OPENINGS = (
    "A photo of",
    "An image showing",
    "A close-up picture of",
    "A clear example of",
    "A typical photo of",
)
CAUSE_BODIES = (
    "the {cause} of the {task} {class}",
    "the {class}, a {task} recognisable by its {cause}",
    "the characteristic {cause} of the {class}",
    "a {task} of the class {class}, with attention to its {cause}",
    "the {cause} typical of the {task} {class}",
)
DESCRIPTIVE_BODIES = (
    "the {task} {class}",
    "the {class}, a kind of {task}",
    "the appearance of the {task} {class}",
    "the visual features of the {task} {class}",
    "the typical look of the {task} {class}",
)
DISTINCTIVE_BODIES = (
    "the {class}, unlike the other {task} classes",
    "the features that set the {class} apart from the other {task} classes",
    "the details that distinguish the {class} from the other {task} classes",
    "the {task} {class} and what makes it unique",
    "the {class}, not to be confused with the other {task} classes",
)


def template_sentences(pset: PromptSet, classname: str, task: str) -> list[str]:
    """``pset.samples`` sentences for one class (the template list repeats if more are wanted)."""
    if pset.filename.endswith("_dist.json"):
        bodies = DISTINCTIVE_BODIES
    elif pset.filename.endswith("_des.json"):
        bodies = DESCRIPTIVE_BODIES
    else:
        bodies = CAUSE_BODIES
    fields = {"class": classname, "task": task, "cause": pset.cause}
    pool = [f"{opening} {body.format(**fields)}." for body, opening in product(bodies, OPENINGS)]
    return [pool[i % len(pool)] for i in range(pset.samples)]


def template_descriptions(
    classes: Sequence[str],
    task: str,
    causes: Sequence[str] = (),
    out_dir: str | Path = ".",
    *,
    mode: str = "causes",
    key: str = "descriptions",
    samples: int | None = None,
    attributes: Sequence[str] = ("des", "dist"),
) -> GenerationResult:
    """Write template descriptions in the same files and shape as :func:`generate_descriptions`,
    labelled ``source: template`` in the folder's manifest (and ``result.source``)."""
    classes = validate_classes(classes)
    sets = prompt_sets(mode, key, causes, samples=samples, attributes=attributes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = {
        s.filename: {
            "source": "template",
            "note": TEMPLATE_NOTE,
            "samples": s.samples,
            "task": task,
            "cause": s.cause or None,
        }
        for s in sets
    }
    claim_files(out, entries)
    for pset in sets:
        file = DescriptionFile(out / pset.filename, classes)
        file.data = {c: template_sentences(pset, c, task) for c in classes}
        file.write()
    total = len(sets) * len(classes)
    return GenerationResult(
        files=[out / s.filename for s in sets],
        total=total,
        complete=total,
        usage=Usage(),
        source="template",
        warnings=[TEMPLATE_NOTE],
    )
