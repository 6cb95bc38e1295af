"""What ``aiml-bge embed`` says while it works: retries and why, and what its limits mean."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from cli_helpers import error_lines, write_lines

from aiml_bge_integrations import cli
from aiml_bge_integrations.server import FaultConfig

TEXTS = [f"Passage {i} on the weather in spring." for i in range(12)]


def retry_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("aiml-bge: retrying:")]


def test_a_retry_is_said_with_its_cause_once_not_for_every_retry(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    server = make_server(faults=FaultConfig(script=["503", "503", "503"]))
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    src = write_lines(tmp_path / "in.txt", TEXTS)
    got = run_cli(
        "embed", src, "-o", tmp_path / "v.jsonl", "--base-url", server.base_url,
        "--max-concurrency", "1",
    )  # fmt: skip
    assert got.code == 0, got.err
    lines = retry_lines(got.err)
    assert len(lines) == 1, got.err  # three retries within seconds: one line
    assert "the server answered HTTP 503; next try in" in lines[0]
    assert "3 retries" in got.out


def test_an_unreachable_server_is_said_before_the_retries_run_out(
    run_cli: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setenv("AIMLAPI_API_KEY", "sk-local")
    src = write_lines(tmp_path / "in.txt", TEXTS[:2])
    got = run_cli(
        "embed", src, "-o", tmp_path / "v.jsonl", "--base-url", f"http://127.0.0.1:{port}/v1",
        "--max-retries", "2",
    )  # fmt: skip
    assert got.code == cli.EXIT_API, got.err
    lines = retry_lines(got.err)
    assert lines and "the server cannot be reached" in lines[0], got.err
    assert len(error_lines(got.err)) == 1


def test_the_summary_names_the_clients_limit_when_the_server_showed_none(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "in.txt", TEXTS)
    got = run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--batch-size", "2")
    assert got.code == 0, got.err
    assert "(the client's limit is 16; the server refused none)" in got.out
    assert "as the server allowed" not in got.out


def test_the_summary_says_when_the_server_refused_above_a_level(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    server = make_server(max_concurrent_requests=2, latency=0.05)
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    src = write_lines(tmp_path / "in.txt", TEXTS * 4)
    got = run_cli(
        "embed", src, "-o", tmp_path / "v.jsonl", "--base-url", server.base_url,
        "--batch-size", "1", "--max-concurrency", "8",
    )  # fmt: skip
    assert got.code == 0, got.err
    refused = server.stats["by_status"].get("429", 0)
    assert refused > 0
    assert f"the server refused {refused:,} request" in got.out
    assert "its limit is 8" in got.out


def test_identical_passages_are_sent_once_and_each_row_gets_the_vector(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    import numpy as np
    import orjson

    texts = [TEXTS[i % 3] for i in range(40)]
    src = write_lines(tmp_path / "in.txt", texts)
    server_env.reset_stats()
    got = run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--batch-size", "4")
    assert got.code == 0, got.err
    assert server_env.stats["items"] == 3
    assert "37 passages repeated an earlier one" in got.out
    rows = [orjson.loads(line) for line in (tmp_path / "v.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in rows] == list(range(1, 41))
    for i, row in enumerate(rows):
        assert row["embedding"] == rows[i % 3]["embedding"]
    assert len({tuple(r["embedding"]) for r in rows[:3]}) == 3
    got = run_cli("embed", src, "-o", tmp_path / "v.npy", "--batch-size", "4")
    assert got.code == 0, got.err
    matrix = np.load(tmp_path / "v.npy")
    want = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(matrix, want)
