"""Description files from the world's vocabulary have the published shape."""

import hashlib
import json

from reprogram.text.descriptions import read_description_file, valid_sentences
from reprogram.toy import describe, world
from reprogram.toy.describe import ClassSpec

CLASSES = [
    ClassSpec("red star", {"shape": "star", "color": "red"}),
    ClassSpec("blue star", {"shape": "star", "color": "blue"}),
    ClassSpec("red ring", {"shape": "ring", "color": "red"}),
]


def _check_shape(data, classes):
    assert list(data) == [c.name for c in classes]
    for sentences in data.values():
        assert len(sentences) >= 20
        assert all(isinstance(s, str) and len(s) >= 20 for s in sentences)
        assert len(valid_sentences(sentences)) == len(sentences)


def test_cause_files_have_the_published_shape():
    for cause in ("shape", "color", "texture", "size", "position", "background"):
        _check_shape(describe.cause_descriptions(CLASSES, cause), CLASSES)


def test_fixed_causes_name_the_value_and_free_ones_vary():
    shape = describe.cause_descriptions(CLASSES, "shape")
    assert any("star" in s or "point" in s for s in shape["red star"])
    colour = describe.cause_descriptions(CLASSES, "color")
    assert (
        sum(any(w in s for w in world.PHRASES["color"]["red"]["names"]) for s in colour["red ring"])
        > 5
    )
    texture = describe.cause_descriptions(CLASSES, "texture")  # texture is free for these classes
    assert all(" or " in s for s in texture["red star"])


def test_descriptions_are_deterministic_and_seeded():
    a = describe.cause_descriptions(CLASSES, "shape", seed=0)
    assert a == describe.cause_descriptions(CLASSES, "shape", seed=0)
    assert a != describe.cause_descriptions(CLASSES, "shape", seed=1)


def test_attribute_files_and_distinctive_contrasts(tmp_path):
    written = describe.write_descriptions(CLASSES, tmp_path)
    assert sorted(written) == ["cse_1", "cse_2", "cse_3", "des", "dist"]
    for path in written.values():
        data = read_description_file(path)
        _check_shape(data, CLASSES)
        json.loads(path.read_text())
    dist = read_description_file(tmp_path / "dist.json")
    # red star vs blue star differ only by colour: its contrasts with blue star talk about red
    about_blue = [s for s in dist["red star"] if "blue star" in s]
    assert about_blue and all("star" in s for s in about_blue)
    assert not any("point" in s for s in about_blue)


def test_notes_describe_classes_outside_the_world():
    spec = ClassSpec("trouser", {"size": "large"}, notes={"shape": {"details": ("a long stem",)}})
    other = ClassSpec("bag", {"size": "large"}, notes={"shape": {"details": ("four equal sides",)}})
    shape = describe.cause_descriptions([spec, other], "shape")
    assert all(len(s) >= 20 for s in shape["trouser"]) and len(shape["trouser"]) >= 20
    assert any("long stem" in s for s in shape["trouser"])


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=False).encode()).hexdigest()[:16]


def test_vocabulary_and_texts_are_those_the_packaged_weights_learnt():
    """The toy CLIP was pretrained on these words: the tables (read from the package data), the
    class lists and the description files of every task must not change."""
    from reprogram.toy import tasks, vocabulary

    names = "FACTORS PHRASES COLOR_RGB BACKGROUND_RGB SIZE_RADIUS POSITION_OFFSET HELD_OUT_PAIRS"
    tables = [getattr(vocabulary, name) for name in names.split()]
    texts = {}
    for name, task in tasks.TASKS.items():
        files = {cause: describe.cause_descriptions(task.classes, cause) for cause in task.causes}
        files["des"] = describe.descriptive_attributes(task.classes)
        files["dist"] = describe.distinctive_attributes(task.classes)
        texts[name] = [task.classnames, task.options, files]
    assert (_digest(tables), _digest(texts)) == ("36b8cf6319d549d7", "81b7a15231321fab")
