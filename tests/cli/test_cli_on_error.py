"""``aiml-bge embed --on-error record``: a refused passage is written with its error, the run goes on.

Against a scripted server on 127.0.0.1 (tests/support/scripted_server.py) that refuses one
given text with 422 naming it, as FastAPI servers name an input (``detail[].loc``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import write_lines
from scripted_server import ScriptedServer, vector_of

from aiml_bge_integrations import cli
from aiml_bge_integrations._job import manifest_for

MODEL = "custom-embedder-a"
"""Unknown to the package: no prompt, no token window; the scripted server's vectors pass."""
FLAGS = ["--model", MODEL, "--batch-size", "2", "--max-concurrency", "1", "--max-retries", "0"]
BAD = "a passage the server refuses"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        s.refuse.add(BAD)
        monkeypatch.setenv("AIMLAPI_API_KEY", "k")
        monkeypatch.setenv("AIMLAPI_BASE_URL", s.base_url)
        yield s


def _corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    texts = ["one", "two", "three", BAD, "five", "six", BAD, "eight", "nine"]
    return write_lines(tmp_path / "c.txt", texts), texts


def _vector_close(got: list[float], text: str) -> bool:
    return all(abs(a - b) < 1e-6 for a, b in zip(got, vector_of(text), strict=True))


def test_a_refused_row_is_written_with_its_error_and_the_run_goes_on(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src, texts = _corpus(tmp_path)
    out = tmp_path / "v.jsonl"
    result = run_cli("embed", src, "-o", out, *FLAGS, "--on-error", "record")
    assert result.code == cli.EXIT_PARTIAL == 9, result.err
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == list(range(1, 10))
    for row, text in zip(rows, texts, strict=True):
        if text == BAD:
            assert "embedding" not in row
            assert "HTTP 422" in row["error"] and "not accepted" in row["error"], row
            assert "index" not in row["error"]  # the stream's position means nothing here
        else:
            assert "error" not in row
            assert _vector_close(row["embedding"], text)
    # The refused text was sent once: its repeat got the same error, unsent.
    assert server.sent_texts().count(BAD) == 1
    assert "2 rows were refused" in result.out and "id 4" in result.out, result.out
    manifest = orjson.loads(manifest_for(out).read_bytes())
    assert (manifest["errors"], manifest["on_error"]) == (2, "record")
    # Run again: already complete, and the exit code still says rows are missing vectors.
    again = run_cli("embed", src, "-o", out, *FLAGS, "--on-error", "record")
    assert again.code == cli.EXIT_PARTIAL, again.err
    assert "already complete" in again.out


def test_parquet_gets_a_null_vector_and_an_error_column(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    src, texts = _corpus(tmp_path)
    out = tmp_path / "v.parquet"
    result = run_cli("embed", src, "-o", out, *FLAGS, "--on-error", "record")
    assert result.code == cli.EXIT_PARTIAL, result.err
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == list(range(1, 10))
    for row, text in zip(table, texts, strict=True):
        if text == BAD:
            assert row["embedding"] is None and "HTTP 422" in row["error"]
        else:
            assert row["error"] is None and _vector_close(row["embedding"], text)


def test_by_default_the_run_stops_at_the_refused_row_and_names_it(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src, _ = _corpus(tmp_path)
    out = tmp_path / "v.jsonl"
    result = run_cli("embed", src, "-o", out, *FLAGS)
    assert result.code == cli.EXIT_API, result.err
    assert "line 4: the server refused this passage: this input" in result.err, result.err
    assert "index" not in result.err
    assert not out.exists()
    assert server.sent_texts()[-2:] == ["three", BAD]  # nothing sent after the refusal


def test_npy_output_cannot_record_errors_and_is_refused_before_any_request(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src, _ = _corpus(tmp_path)
    result = run_cli("embed", src, "-o", tmp_path / "v.npy", *FLAGS, "--on-error", "record")
    assert result.code == cli.EXIT_USAGE
    assert ".npy" in result.err and ".jsonl or .parquet" in result.err
    assert server.posts() == []
    assert not (tmp_path / "v.npy.partial").exists()


def test_ray_runs_cannot_record_errors(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src, _ = _corpus(tmp_path)
    result = run_cli("embed", src, "-o", tmp_path / "out", "--ray", "--on-error", "record")
    assert result.code == cli.EXIT_USAGE and "--ray" in result.err
    assert server.posts() == []


def test_an_over_long_row_under_long_text_error_is_recorded_unsent(
    local_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", local_server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", local_server.base_url)
    long = " ".join(["word"] * 700)
    src = write_lines(tmp_path / "c.txt", ["short one", long, "short two"])
    out = tmp_path / "v.jsonl"
    flags = ["--long-text", "error", "--batch-size", "2", "--max-concurrency", "1"]
    stopped = run_cli("embed", src, "-o", out, *flags)
    assert stopped.code == cli.EXIT_INPUT and local_server.stats["requests"] == 0
    result = run_cli("embed", src, "-o", out, *flags, "--on-error", "record")
    assert result.code == cli.EXIT_PARTIAL, result.err
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [("error" in r, "embedding" in r) for r in rows] == [
        (False, True),
        (True, False),
        (False, True),
    ]
    assert "702 tokens" in rows[1]["error"] and "--long-text truncate" in rows[1]["error"]
    assert local_server.stats["items"] == 2  # the long one was never sent


def test_a_resumed_recording_run_counts_the_errors_of_the_runs_before(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    src, _ = _corpus(tmp_path)
    out = tmp_path / "v.jsonl"
    # Replies 1-2 as usual (rows 1-3 and the refusal of row 4's batch), then a failure.
    server.script.extend(["default", "default", "default", (500, {"error": "down"}, {})])
    first = run_cli("embed", src, "-o", out, *FLAGS, "--on-error", "record")
    assert first.code == cli.EXIT_API, first.err
    stop = run_cli("embed", src, "-o", out, *FLAGS)  # another on_error: another run
    assert stop.code == cli.EXIT_RESUME and "on_error" in stop.err, stop.err
    done = run_cli("embed", src, "-o", out, *FLAGS, "--on-error", "record")
    assert done.code == cli.EXIT_PARTIAL, done.err
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows if "error" in r] == [4, 7]
    assert orjson.loads(manifest_for(out).read_bytes())["errors"] == 2


def test_parquet_rows_refused_before_any_vector_wait_for_its_length(
    server: ScriptedServer, run_cli: Any, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    src = write_lines(tmp_path / "c.txt", [BAD, BAD, BAD, "one", "two"])
    out = tmp_path / "v.parquet"
    result = run_cli("embed", src, "-o", out, *FLAGS, "--on-error", "record")
    assert result.code == cli.EXIT_PARTIAL, result.err
    table = pq.read_table(out).to_pylist()
    assert [r["embedding"] is None for r in table] == [True, True, True, False, False]
    assert _vector_close(table[3]["embedding"], "one")

    only_bad = write_lines(tmp_path / "bad.txt", [BAD, BAD])
    refused = run_cli(
        "embed", only_bad, "-o", tmp_path / "b.parquet", *FLAGS, "--on-error", "record"
    )
    assert refused.code == cli.EXIT_OUTPUT
    assert "every passage was refused" in refused.err and ".jsonl" in refused.err
    jsonl = run_cli("embed", only_bad, "-o", tmp_path / "b.jsonl", *FLAGS, "--on-error", "record")
    assert jsonl.code == cli.EXIT_PARTIAL, jsonl.err


def test_a_server_that_refuses_every_passage_stops_the_run_anyway(
    server: ScriptedServer, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiml_bge_integrations._job import run

    monkeypatch.setattr(run, "REFUSED_IN_A_ROW", 3)
    texts = [f"refused {i}" for i in range(8)]
    server.refuse.update(texts)
    src = write_lines(tmp_path / "c.txt", ["fine", *texts])
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl", *FLAGS, "--on-error", "record")
    assert result.code == cli.EXIT_API, result.err
    assert "3 passages in a row were refused" in result.err and "line 4" in result.err
    assert len(server.posts()) == 3  # one per refusal, not one per passage to the end
