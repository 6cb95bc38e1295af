"""The manifest beside the output: the model as the server's replies named it, both sides' prompts.

Against a scripted server on 127.0.0.1 (tests/support/scripted_server.py) that answers with
a model name other than the one asked for, as a single-model server does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import write_lines
from scripted_server import ScriptedServer

from aiml_bge_integrations import cli
from aiml_bge_integrations._job import manifest_for

MODEL = "custom-embedder-a"
pytestmark = pytest.mark.filterwarnings("ignore::aiml_bge_integrations.errors.ModelMismatchWarning")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    with ScriptedServer(model="vendor/served-a") as s:
        monkeypatch.setenv("AIMLAPI_API_KEY", "k")
        monkeypatch.setenv("AIMLAPI_BASE_URL", s.base_url)
        yield s


FLAGS = ["--model", MODEL, "--batch-size", "2", "--max-concurrency", "1", "--max-retries", "0"]


def test_the_manifest_names_the_model_as_served_and_as_requested(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "c.txt", [f"text {i}" for i in range(5)])
    out = tmp_path / "v.jsonl"
    done = run_cli("embed", src, "-o", out, *FLAGS, "--document-instruction", "passage: ")
    assert done.code == 0, done.err
    manifest = orjson.loads(manifest_for(out).read_bytes())
    assert manifest["model"] == MODEL
    assert manifest["model_served"] == "vendor/served-a"
    assert manifest["document_instruction"] == "passage: "
    assert manifest["runs"][-1]["model_served"] == "vendor/served-a"


def test_a_resume_against_a_server_serving_another_model_is_refused_naming_both(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "c.txt", [f"text {i}" for i in range(6)])
    out = tmp_path / "v.jsonl"
    server.script.extend(["default", (400, {"error": {"message": "no"}}, {})])
    assert run_cli("embed", src, "-o", out, *FLAGS).code == cli.EXIT_API  # 2 rows saved
    server.model = "vendor/served-b"
    sent = len(server.posts())
    refused = run_cli("embed", src, "-o", out, *FLAGS)
    assert refused.code == cli.EXIT_RESUME, refused.err
    assert "'vendor/served-b'" in refused.err and "'vendor/served-a'" in refused.err
    assert len(server.posts()) == sent + 1  # the one reply that named the other model
    assert not out.exists()
    server.model = "vendor/served-a"  # the first server back: the job finishes
    done = run_cli("embed", src, "-o", out, *FLAGS)
    assert done.code == 0, done.err
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert orjson.loads(manifest_for(out).read_bytes())["model_served"] == "vendor/served-a"
