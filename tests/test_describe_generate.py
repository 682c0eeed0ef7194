"""Resumable generation against a real HTTP server on 127.0.0.1: faults, resume, kill, templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import describe_app
from test_describe_server import FakeChatServer, serve
from typer.testing import CliRunner

from reprogram.errors import ReprogramError
from reprogram.text.describe import (
    AuthenticationError,
    ChatClient,
    Sampling,
    check_descriptions,
    generate_descriptions,
    template_descriptions,
)
from reprogram.text.describe.manifest import MANIFEST_NAME, read_manifest
from reprogram.text.descriptions import read_description_file, valid_sentences

SRC = Path(__file__).resolve().parents[1] / "src"
CLASSES = ["banded", "dotted", "zig.zag"]


@pytest.fixture()
def chat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatServer]:
    yield from serve(monkeypatch)


def client_for(server: FakeChatServer, **kw) -> ChatClient:
    options = {"timeout": 5.0, "max_retries": 3, "backoff": 0.001, "max_backoff": 0.01}
    return ChatClient("fake-model", server.base_url, "sk-test", **{**options, **kw})


def read(path: Path) -> dict[str, list[str]]:
    return read_description_file(path)


def test_cause_files_have_the_published_shape_and_paper_prompts(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    events = []
    result = generate_descriptions(
        CLASSES, "texture", ["pattern", "contrast"], tmp_path, client=client_for(chat_server),
        key="toy", on_progress=events.append,
    )
    assert result.ok and result.complete == result.total == 6
    assert [p.name for p in result.files] == ["toy_cse_1.json", "toy_cse_2.json"]
    for path in result.files:
        data = read(path)
        assert list(data) == CLASSES
        assert all(len(valid_sentences(s)) == len(s) == 20 for s in data.values())
        assert not any(s.endswith(".") for v in data.values() for s in v)  # cut at the stop
    assert chat_server.prompts()[:3] == [
        "Describe the pattern of the texture image 'banded'",
        "Describe the pattern of the texture image 'dotted'",
        "Describe the pattern of the texture image 'zigzag'",  # dots dropped, as in the paper
    ]
    payload = chat_server.log[0]["payload"]
    assert (payload["n"], payload["temperature"], payload["max_tokens"], payload["stop"]) == (
        20, 0.99, 50, ["."],
    )
    assert payload["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert result.usage.requests == 6 and result.usage.completion_tokens == 6 * 200
    assert events[-1].done == events[-1].total == 6 and events[-1].usage.requests == 6
    entry = read_manifest(tmp_path)["files"]["toy_cse_2.json"]
    assert entry["source"] == "llm" and entry["model"] == "fake-model"
    assert entry["prompt"] == "Describe the contrast of the texture image '{class}'"
    assert check_descriptions(result.files, CLASSES).ok


def test_attribute_mode_writes_des_and_dist(chat_server: FakeChatServer, tmp_path: Path) -> None:
    result = generate_descriptions(
        ["apple pie", "banded"], "food", out_dir=tmp_path, client=client_for(chat_server),
        mode="attributes", key="toy",
    )
    assert [p.name for p in result.files] == ["toy_des.json", "toy_dist.json"]
    for path in result.files:
        data = read(path)
        assert all(len(s) == 25 and all(x.endswith(".") for x in s) for s in data.values())
    assert set(chat_server.prompts()) == {
        "Describe the appearance of the food apple pie",
        "Describe the appearance of the food banded",
        "Describe the unique appearance of an apple pie from the other food",
        "Describe the unique appearance of a banded from the other food",
    }


def test_faults_mid_run_are_retried_transparently(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.faults = ["ok", "429", "500", "badjson"]
    result = generate_descriptions(
        CLASSES, "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy"
    )
    assert result.ok and result.usage.retries == 3 and result.usage.requests == 6


def test_short_answers_are_asked_again_only_for_what_is_missing(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.short_first = 3  # each prompt's first answer has 3 empty/short choices
    result = generate_descriptions(
        ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy"
    )
    assert result.ok
    assert [e["payload"]["n"] for e in chat_server.log] == [20, 3]
    assert len(read(tmp_path / "toy_cse_1.json")["banded"]) == 20


def test_short_answers_forever_give_up_after_a_bounded_number(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.rule = lambda index, payload: "short"
    result = generate_descriptions(
        ["banded", "dotted"], "texture", ["pattern"], tmp_path, client=client_for(chat_server),
        key="toy", sampling=Sampling(max_failed_requests=2),
    )
    assert not result.ok
    assert result.incomplete == {"toy_cse_1.json": {"banded": 0, "dotted": 0}}
    assert len(chat_server.log) == 4
    assert not (tmp_path / "toy_cse_1.json").exists()


def test_server_that_ignores_n_is_asked_until_enough(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.max_choices = 1  # Ollama / llama.cpp return a single choice
    result = generate_descriptions(
        ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy",
        samples=4,
    )
    assert result.ok and [e["payload"]["n"] for e in chat_server.log] == [4, 3, 2, 1]


def test_server_that_refuses_n_is_asked_one_at_a_time(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.single_choice_only = True  # llama.cpp answers HTTP 400 to n > 1
    result = generate_descriptions(
        ["banded", "dotted"], "texture", ["pattern"], tmp_path, client=client_for(chat_server),
        key="toy", samples=3,
    )
    assert result.ok and any("refused n=3" in w for w in result.warnings)
    assert [e["payload"]["n"] for e in chat_server.log] == [3, 1, 1, 1, 1, 1, 1]


def test_n_per_request_caps_the_batch(chat_server: FakeChatServer, tmp_path: Path) -> None:
    generate_descriptions(
        ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy",
        samples=5, sampling=Sampling(n_per_request=2),
    )
    assert [e["payload"]["n"] for e in chat_server.log] == [2, 2, 1]


def test_stop_ignored_by_the_server_is_applied_locally(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.ignore_stop = True
    generate_descriptions(
        ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy",
        samples=2,
    )
    sentences = read(tmp_path / "toy_cse_1.json")["banded"]
    assert sentences[0] == "Answer 0 to the question Describe the pattern of the texture image " \
        "'banded' in some detail"


def test_rerun_asks_only_for_what_is_missing(chat_server: FakeChatServer, tmp_path: Path) -> None:
    path = tmp_path / "toy_cse_1.json"
    done = [f"A finished sentence number {i} about banded" for i in range(20)]
    partial = [f"A partial sentence number {i} about dotted" for i in range(5)] + ["short"]
    path.write_text(json.dumps({"dotted": partial, "banded": done, "extra class": ["kept"]}))
    result = generate_descriptions(
        CLASSES, "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy"
    )
    assert result.ok
    asked = {e["payload"]["messages"][-1]["content"]: e["payload"]["n"] for e in chat_server.log}
    assert asked == {
        "Describe the pattern of the texture image 'dotted'": 15,
        "Describe the pattern of the texture image 'zigzag'": 20,
    }
    data = read(path)
    assert list(data) == [*CLASSES, "extra class"]  # label order, unknown classes kept
    assert data["banded"] == done and data["dotted"][:6] == partial
    # a second rerun has nothing to ask
    generate_descriptions(
        CLASSES, "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy"
    )
    assert len(chat_server.log) == 2


def test_401_stops_at_once_and_keeps_finished_classes(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.rule = lambda index, payload: "401" if index == 2 else None
    with pytest.raises(AuthenticationError, match="401"):
        generate_descriptions(
            [*CLASSES, "plaid"], "texture", ["pattern"], tmp_path,
            client=client_for(chat_server), key="toy",
        )
    assert len(chat_server.log) == 3  # nothing after the 401
    assert list(read(tmp_path / "toy_cse_1.json")) == ["banded", "dotted"]


def test_parallel_workers_ask_each_class_once(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    classes = [f"class{i}" for i in range(6)]
    result = generate_descriptions(
        classes, "texture", ["pattern", "color"], tmp_path, client=client_for(chat_server),
        key="toy", workers=3,
    )
    assert result.ok
    prompts = chat_server.prompts()
    assert len(prompts) == len(set(prompts)) == 12
    assert all(list(read(p)) == classes for p in result.files)


def test_parallel_workers_stop_on_401(chat_server: FakeChatServer, tmp_path: Path) -> None:
    chat_server.rule = lambda index, payload: "401" if index >= 2 else None
    classes = [f"class{i}" for i in range(12)]
    with pytest.raises(AuthenticationError):
        generate_descriptions(
            classes, "texture", ["pattern"], tmp_path, client=client_for(chat_server),
            key="toy", workers=2,
        )
    assert len(chat_server.log) <= 4  # at most the requests already in flight


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from reprogram.text.describe import ChatClient, generate_descriptions
    classes = [f"class{i}" for i in range(8)]
    client = ChatClient("fake-model", sys.argv[1], "sk-test", timeout=60, max_retries=0)
    generate_descriptions(classes, "texture", ["pattern"], sys.argv[2], client=client, key="toy")
    """
)


def test_kill_mid_run_then_resume_repeats_no_finished_class(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    classes = [f"class{i}" for i in range(8)]
    path = tmp_path / "toy_cse_1.json"
    chat_server.block_after = 3  # answer three classes, then hold the fourth request
    pythonpath = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, chat_server.base_url, str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        chat_server.wait_for_requests(4, timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (path.exists() and len(read(path)) == 3):
            time.sleep(0.02)
    finally:
        proc.kill()
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode != 0, output
    finished = set(read(path))
    assert finished == {"class0", "class1", "class2"}, output
    chat_server.release()

    chat_server.block_after = None
    before = len(chat_server.log)
    result = generate_descriptions(
        classes, "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy"
    )
    resumed = chat_server.prompts()[before:]
    assert not [p for p in resumed if any(f"'{c}'" in p for c in finished)]
    assert len(resumed) == 5 and "'class3'" in resumed[0]  # the held class is asked again
    assert result.ok and list(read(path)) == classes
    assert all(len(valid_sentences(s)) == 20 for s in read(path).values())


def test_template_fallback_has_the_same_shape_and_is_labelled(tmp_path: Path) -> None:
    result = template_descriptions(["ant", "zig.zag"], "texture", ["color", "pattern"], tmp_path,
                                   key="toy")
    assert result.source == "template" and "weaker" in result.warnings[0]
    for path in result.files:
        data = read(path)
        assert list(data) == ["ant", "zig.zag"]
        for sentences in data.values():
            assert len(valid_sentences(sentences)) == 20 == len(set(sentences))
    assert "color" in read(tmp_path / "toy_cse_1.json")["ant"][0]
    entry = read_manifest(tmp_path)["files"]["toy_cse_1.json"]
    assert entry["source"] == "template" and "weaker" in entry["note"]
    report = check_descriptions(result.files, ["ant", "zig.zag"])
    assert report.ok and report.files[0].template
    assert not check_descriptions(result.files, ["ant", "zig.zag"], strict=True).ok
    attrs = template_descriptions(["ant"], "texture", out_dir=tmp_path, mode="attributes", key="a")
    assert all(len(valid_sentences(read(p)["ant"])) == 25 for p in attrs.files)


def test_sources_are_never_mixed_in_one_file(chat_server: FakeChatServer, tmp_path: Path) -> None:
    generate_descriptions(
        ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="llm"
    )
    with pytest.raises(ReprogramError, match="not made by the template"):
        template_descriptions(["banded"], "texture", ["pattern"], tmp_path, key="llm")
    template_descriptions(["banded"], "texture", ["pattern"], tmp_path, key="tpl")
    with pytest.raises(ReprogramError, match="template-fallback"):
        generate_descriptions(
            ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="tpl"
        )
    assert (tmp_path / MANIFEST_NAME).exists()


def test_resume_with_another_model_warns(chat_server: FakeChatServer, tmp_path: Path) -> None:
    generate_descriptions(
        ["banded"], "texture", ["pattern"], tmp_path, client=client_for(chat_server), key="toy",
        samples=2,
    )
    other = ChatClient("other-model", chat_server.base_url, "k", max_retries=0)
    result = generate_descriptions(
        ["banded", "dotted"], "texture", ["pattern"], tmp_path, client=other, key="toy", samples=2
    )
    assert any("different model" in w for w in result.warnings)
    entry = read_manifest(tmp_path)["files"]["toy_cse_1.json"]
    assert entry["earlier"][0]["model"] == "fake-model" and entry["model"] == "other-model"


def test_bad_inputs_fail_before_any_request(chat_server: FakeChatServer, tmp_path: Path) -> None:
    client = client_for(chat_server)
    with pytest.raises(ReprogramError, match="repeated"):
        generate_descriptions(["a", "a"], "t", ["c"], tmp_path, client=client)
    with pytest.raises(ReprogramError, match="causes"):
        generate_descriptions(["a"], "t", [], tmp_path, client=client)
    with pytest.raises(ReprogramError, match="placeholder"):
        generate_descriptions(["a"], "t", ["c"], tmp_path, client=client, prompt="{klass}")
    with pytest.raises(ReprogramError, match="mode"):
        generate_descriptions(["a"], "t", ["c"], tmp_path, client=client, mode="other")
    assert chat_server.log == []


def test_cli_describe_against_the_server(chat_server: FakeChatServer, tmp_path: Path) -> None:
    classes = tmp_path / "birds.txt"
    classes.write_text("robin\n\nblue jay\n")
    args = [
        "describe", "--classes", str(classes), "--task", "bird", "--causes", "beak, plumage",
        "--out", str(tmp_path / "out"), "--base-url", chat_server.base_url, "--api-key", "k",
        "--model", "fake-model", "--samples", "3", "--no-progress",
    ]
    result = CliRunner().invoke(describe_app(), args)
    assert result.exit_code == 0, result.output
    assert "4/4 complete" in result.output and "4 requests" in result.output
    assert read(tmp_path / "out" / "birds_cse_2.json")["blue jay"]
    assert chat_server.prompts()[0] == "Describe the beak of the bird image 'robin'"


def test_cli_describe_dataset_and_template(tmp_path: Path) -> None:
    args = ["describe", "--dataset", "eurosat", "--template", "--out", str(tmp_path)]
    result = CliRunner().invoke(describe_app(), args)
    assert result.exit_code == 0, result.output
    assert "weaker" in result.output
    assert sorted(p.name for p in tmp_path.glob("eurosat_cse_*.json")) == [
        "eurosat_cse_1.json", "eurosat_cse_2.json", "eurosat_cse_3.json",
    ]
    args = ["descriptions", "check", str(tmp_path / "eurosat_cse_1.json")]
    check = CliRunner().invoke(describe_app(), args)
    assert check.exit_code == 0, check.output


def test_cli_describe_reports_short_classes_with_exit_1(
    chat_server: FakeChatServer, tmp_path: Path
) -> None:
    chat_server.rule = lambda index, payload: "short"
    args = [
        "describe", "--dataset", "eurosat", "--causes", "texture", "--out", str(tmp_path),
        "--base-url", chat_server.base_url, "--max-failed", "1",  # progress bar on
    ]
    result = CliRunner().invoke(describe_app(), args)
    assert result.exit_code == 1 and "rerun" in result.output


def test_cli_describe_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cases = [
        (["--dataset", "dtd"], "--template"),  # no endpoint configured
        (["--dataset", "dtd", "--classes", "x.txt"], "exactly one"),
        (["--classes", str(tmp_path / "none.txt"), "--task", "t", "--causes", "c"], "not found"),
        (["--dataset", "dtd", "--mode", "x"], "--mode"),
        (["--dataset", "eurosat", "--num-causes", "4"], "1..3"),
        (["--classes", str(tmp_path / "none.txt"), "--causes", "c"], "--task"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(describe_app(), ["describe", "--out", str(tmp_path), *extra])
        assert isinstance(result.exception, ReprogramError), result.output
        assert message in str(result.exception)
