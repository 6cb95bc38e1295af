"""``aiml-bge embed`` failures: one clear line, a documented non-zero code, no output file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import child_env, error_lines, run_process, write_lines

from aiml_bge_integrations import cli
from aiml_bge_integrations.server import FaultConfig

TEXTS = [f"Passage number {i} about topic {i % 3}." for i in range(10)]


def assert_failed(result: Any, code: int, *phrases: str) -> str:
    """Exit ``code``, exactly one error line on stderr containing every phrase; returns it."""
    assert result.code == code, (result.code, result.err)
    lines = error_lines(result.err)
    assert len(lines) == 1, result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not out.with_name(out.name + ".partial").exists()


# -- the key ------------------------------------------------------------------------------------


def test_missing_key_in_a_real_process(local_server: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "v.jsonl"
    env = child_env(AIMLAPI_BASE_URL=local_server.base_url)
    proc = run_process(["embed", src, "-o", out], env)
    assert proc.returncode == cli.EXIT_KEY
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "AIMLAPI_API_KEY" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert local_server.stats["requests"] == 0
    assert_no_output(out)


def test_missing_key_in_process(local_server: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl")
    assert_failed(result, cli.EXIT_KEY, "no API key", "AIMLAPI_API_KEY")


def test_refused_key(
    local_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", "wrong-key")
    monkeypatch.setenv("AIMLAPI_BASE_URL", local_server.base_url)
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "v.jsonl"
    line = assert_failed(run_cli("embed", src, "-o", out), cli.EXIT_KEY, "401")
    assert "wrong-key" not in line
    assert_no_output(out)


# -- the model ----------------------------------------------------------------------------------


def test_retired_model(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(
        served_models=["BAAI/bge-small-en-v1.5"], retired_models=["BAAI/bge-base-en-v1.5"]
    )
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", server.base_url)
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "v.jsonl"
    line = assert_failed(
        run_cli("embed", src, "-o", out),
        cli.EXIT_MODEL,
        "404",
        "BAAI/bge-base-en-v1.5",
        "deprecated",
        "--model",
    )
    assert "model" in line
    assert_no_output(out)


# -- the input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "phrases"),
    [
        (b'{"text": "ok"}\n{"text": "fine"}\n{"text": oops}\n', ["line 3", "not valid JSON"]),
        (b'{"text": "ok"}\n{"body": "no text field"}\n', ["line 2", '"text"', "--field"]),
        (b'{"text": "ok"}\n{"text": 42}\n', ["line 2", "not a string"]),
        (b'{"text": "ok"}\n\n{"text": "   "}\n', ["line 3", "empty"]),
        (b'{"text": "ok"}\n["a", "list"]\n', ["line 2", "JSON object"]),
    ],
)
def test_bad_jsonl_line_is_named(
    server_env: Any, run_cli: Any, tmp_path: Path, content: bytes, phrases: list[str]
) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_bytes(content)
    out = tmp_path / "v.jsonl"
    assert_failed(run_cli("embed", src, "-o", out), cli.EXIT_INPUT, str(src), *phrases)
    assert server_env.stats["requests"] == 0  # found before anything was sent
    assert_no_output(out)


def test_bad_id_field_values(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    rows = [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": "three", "text": "c"}]
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--id-field", "id")
    assert_failed(result, cli.EXIT_INPUT, "line 3", "line 1")
    src.write_bytes(b'{"id": null, "text": "a"}\n')
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--id-field", "id")
    assert_failed(result, cli.EXIT_INPUT, "line 1", "strings or integers")


def test_invalid_utf8_line_in_text_file(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "corpus.txt"
    src.write_bytes(b"fine line\nbad \xff\xfe line\nanother\n")
    out = tmp_path / "v.jsonl"
    assert_failed(run_cli("embed", src, "-o", out), cli.EXIT_INPUT, "line 2", "UTF-8")
    assert server_env.stats["requests"] == 0
    assert_no_output(out)


def test_missing_input_and_empty_inputs(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    assert_failed(
        run_cli("embed", tmp_path / "nope.txt", "-o", out), cli.EXIT_INPUT, "no such file"
    )
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    assert_failed(run_cli("embed", blank, "-o", out), cli.EXIT_INPUT, "no passages")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert_failed(run_cli("embed", empty_dir, "-o", out), cli.EXIT_INPUT, "no .txt or .md")
    (empty_dir / "a.md").write_text("", encoding="utf-8")
    assert_failed(run_cli("embed", empty_dir, "-o", out), cli.EXIT_INPUT, "a.md", "empty")
    assert server_env.stats["requests"] == 0
    assert_no_output(out)


def test_over_long_passages_with_long_text_error(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "corpus.txt", ["short", " ".join(["word"] * 600), "short"])
    out = tmp_path / "v.jsonl"
    assert_failed(
        run_cli("embed", src, "-o", out, "--long-text", "error"),
        cli.EXIT_INPUT,
        "line 2 (602 tokens)",
        "512",
    )
    assert server_env.stats["requests"] == 0
    assert_no_output(out)


# -- the output ---------------------------------------------------------------------------------


def test_output_under_a_file(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    result = run_cli("embed", src, "-o", blocker / "v.jsonl")
    assert_failed(result, cli.EXIT_OUTPUT, "not a directory")
    assert server_env.stats["requests"] == 0


def test_output_in_a_missing_directory(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    result = run_cli("embed", src, "-o", tmp_path / "missing" / "v.jsonl")
    assert_failed(result, cli.EXIT_OUTPUT, "does not exist")


def test_output_is_a_directory(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    target = tmp_path / "v.jsonl"
    target.mkdir()
    assert_failed(run_cli("embed", src, "-o", target), cli.EXIT_OUTPUT, "is a directory")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_output_in_a_read_only_directory(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_cli("embed", src, "-o", locked / "v.jsonl")
    finally:
        locked.chmod(0o755)
    assert_failed(result, cli.EXIT_OUTPUT, "not writable")


def test_unknown_output_suffix(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    result = run_cli("embed", src, "-o", tmp_path / "v.csv")
    assert_failed(result, cli.EXIT_USAGE, ".jsonl, .npy or .parquet")


def test_bad_settings(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--base-url", "ftp://example")
    assert_failed(result, cli.EXIT_USAGE, "base_url")
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--batch-size", "0")
    assert result.code == cli.EXIT_USAGE
    assert "--batch-size" in result.err


# -- failures mid-run, and resuming after them -----------------------------------------------------


def test_api_failure_mid_run_keeps_the_checkpoint_and_resumes(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(faults=FaultConfig(script=[None, None, "500"]))
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", server.base_url)
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "v.jsonl"
    flags = ["--batch-size", "2", "--max-concurrency", "1", "--max-retries", "0"]
    failed = run_cli("embed", src, "-o", out, *flags)
    assert_failed(failed, cli.EXIT_API, "500", "4 of 10 passages are saved", "same command")
    assert not out.exists()  # a partial result never sits at the output path

    server.config.faults = None
    server.reset_stats()
    resumed = run_cli("embed", src, "-o", out, *flags)
    assert resumed.code == 0, resumed.err
    assert "resuming: 4 of 10" in resumed.err
    assert server.stats["items"] == 6  # the 4 saved passages were not sent again
    assert "whole job" in resumed.out

    reference = tmp_path / "reference.jsonl"
    assert run_cli("embed", src, "-o", reference, *flags).code == 0
    assert out.read_bytes() == reference.read_bytes()


def test_changed_input_refuses_to_resume_until_restart(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(faults=FaultConfig(script=[None, "500"]))
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", server.base_url)
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "v.jsonl"
    flags = ["--batch-size", "3", "--max-concurrency", "1", "--max-retries", "0"]
    assert run_cli("embed", src, "-o", out, *flags).code == cli.EXIT_API
    server.config.faults = None

    write_lines(src, [*TEXTS, "one more passage"])
    assert_failed(
        run_cli("embed", src, "-o", out, *flags), cli.EXIT_RESUME, "fingerprint", "--restart"
    )
    assert_failed(
        run_cli("embed", src, "-o", out, *flags[:2], "--model", "BAAI/bge-small-en-v1.5"),
        cli.EXIT_RESUME,
        "model",
    )
    server.reset_stats()
    restarted = run_cli("embed", src, "-o", out, *flags, "--restart")
    assert restarted.code == 0, restarted.err
    assert server.stats["items"] == len(TEXTS) + 1
    assert len(out.read_bytes().splitlines()) == len(TEXTS) + 1


def test_a_second_run_cannot_write_the_same_job(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    import fcntl

    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "v.jsonl"
    work = tmp_path / "v.jsonl.partial"
    work.mkdir()
    with (work / "lock").open("a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        result = run_cli("embed", src, "-o", out)
    assert_failed(result, cli.EXIT_BUSY, "another aiml-bge embed", str(out))
    assert server_env.stats["requests"] == 0


def test_jsonl_flags_on_a_text_file(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    for extra in (["--id-field", "id"], ["--field", "body"]):
        result = run_cli("embed", src, "-o", tmp_path / "v.jsonl", *extra)
        assert_failed(result, cli.EXIT_USAGE, "apply to JSONL input")
        result = run_cli("embed", src, "--dry-run", *extra)
        assert_failed(result, cli.EXIT_USAGE, "apply to JSONL input")


def test_output_onto_the_input_is_refused(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_text('{"text": "Laura is a DJ."}\n', encoding="utf-8")
    before = src.read_bytes()
    result = run_cli("embed", src, "-o", src, "--overwrite")
    assert_failed(result, cli.EXIT_OUTPUT, "is the input")
    assert src.read_bytes() == before
