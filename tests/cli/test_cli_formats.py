"""``aiml-bge embed``: every input format into every output format, against the local server."""

from __future__ import annotations

import getpass
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from cli_helpers import write_lines

from aiml_bge_integrations.server import HashingEmbedder

TEXTS = [
    "Laura is a DJ.",
    "The Moon orbits the Earth.",
    "Ünïcödé text, with ümlauts and 漢字.",
    "Cats purr when they are content.",
    "Bread rises because yeast makes gas.",
]


def expected(texts: list[str]) -> np.ndarray[Any, Any]:
    """The server's vectors for ``texts``, as the float32 values it sends."""
    return HashingEmbedder().embed(texts).astype(np.float32)


def read_jsonl(path: Path) -> tuple[list[Any], np.ndarray[Any, Any]]:
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [r["id"] for r in rows], np.asarray([r["embedding"] for r in rows], dtype=np.float64)


def assert_same_vectors(got: np.ndarray[Any, Any], texts: list[str]) -> None:
    want = expected(texts)
    assert got.shape == want.shape
    assert np.array_equal(got.astype(np.float32), want)


def assert_clean(output: Path) -> None:
    """Only finished files next to the output: no staging directory left behind."""
    assert not output.with_name(output.name + ".partial").exists()


def test_text_file_to_jsonl_ids_are_line_numbers(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = tmp_path / "corpus.txt"
    # A blank line and a whitespace-only line are skipped; CRLF endings are not part of the text.
    src.write_bytes(
        b"Laura is a DJ.\r\n\nThe Moon orbits the Earth.\n   \nCats purr when they are content."
    )
    out = tmp_path / "vectors.jsonl"
    result = run_cli("embed", src, "-o", out)
    assert result.code == 0, result.err
    ids, vectors = read_jsonl(out)
    assert ids == [1, 3, 5]
    assert_same_vectors(
        vectors,
        ["Laura is a DJ.", "The Moon orbits the Earth.", "Cats purr when they are content."],
    )
    assert server_env.stats["items"] == 3
    assert "wrote 3 vectors (768-d)" in result.out
    assert_clean(out)


def test_jsonl_input_with_field_and_id_field(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    records = [{"doc": f"d{i}", "body": t, "other": i} for i, t in enumerate(TEXTS)]
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n\n")
    out = tmp_path / "vectors.jsonl"
    result = run_cli("embed", src, "-o", out, "--field", "body", "--id-field", "doc")
    assert result.code == 0, result.err
    ids, vectors = read_jsonl(out)
    assert ids == [f"d{i}" for i in range(len(TEXTS))]
    assert_same_vectors(vectors, TEXTS)


def test_jsonl_input_without_id_field_uses_line_numbers(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = tmp_path / "docs.ndjson"
    src.write_text('{"text": "first"}\n\n{"text": "second"}\n', encoding="utf-8")
    out = tmp_path / "vectors.jsonl"
    assert run_cli("embed", src, "-o", out).code == 0
    ids, vectors = read_jsonl(out)
    assert ids == [1, 3]
    assert_same_vectors(vectors, ["first", "second"])


def test_directory_of_text_and_markdown_files(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    files = {
        "b.md": "# Bees\nHoney bees dance.",
        "a.txt": "Laura is a DJ.",
        "sub/c.TXT": "The Moon orbits the Earth.",
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "skip.rst").write_text("not a passage", encoding="utf-8")
    (root / ".secret.txt").write_text("hidden file", encoding="utf-8")
    (root / ".hidden" / "x.txt").write_text("hidden dir", encoding="utf-8")
    out = tmp_path / "vectors.jsonl"
    result = run_cli("embed", root, "-o", out)
    assert result.code == 0, result.err
    ids, vectors = read_jsonl(out)
    assert ids == ["a.txt", "b.md", "sub/c.TXT"]
    assert_same_vectors(vectors, [files[i] for i in ids])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_npy_output_with_ids_sidecar(
    server_env: Any, run_cli: Any, tmp_path: Path, dtype: str
) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    out = tmp_path / "vectors.npy"
    result = run_cli("embed", src, "-o", out, "--dtype", dtype, "--batch-size", "2")
    assert result.code == 0, result.err
    matrix = np.load(out)
    assert matrix.dtype == np.dtype(dtype)
    assert_same_vectors(matrix, TEXTS)
    sidecar = tmp_path / "vectors.ids.jsonl"
    assert [orjson.loads(x) for x in sidecar.read_bytes().splitlines()] == [1, 2, 3, 4, 5]
    assert "ids in" in result.out
    assert server_env.stats["requests"] == 3  # batches of 2, 2 and 1
    assert_clean(out)


def test_parquet_output(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "docs.jsonl"
    src.write_bytes(
        b"\n".join(orjson.dumps({"id": f"p{i}", "text": t}) for i, t in enumerate(TEXTS))
    )
    out = tmp_path / "vectors.parquet"
    result = run_cli("embed", src, "-o", out, "--id-field", "id")
    assert result.code == 0, result.err
    table = pq.read_table(out)
    assert table.column_names == ["id", "embedding"]
    assert table.column("id").to_pylist() == [f"p{i}" for i in range(len(TEXTS))]
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[768]"
    assert_same_vectors(np.asarray(table.column("embedding").to_pylist()), TEXTS)
    assert_clean(out)


def test_parquet_integer_ids_are_int64(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    src = write_lines(tmp_path / "corpus.txt", TEXTS[:2])
    out = tmp_path / "vectors.parquet"
    assert run_cli("embed", src, "-o", out).code == 0
    table = pq.read_table(out)
    assert str(table.schema.field("id").type) == "int64"
    assert table.column("id").to_pylist() == [1, 2]


def test_explicit_formats_override_suffixes(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "records.data"
    src.write_text('{"text": "Laura is a DJ."}\n', encoding="utf-8")
    out = tmp_path / "vectors.out"
    result = run_cli("embed", src, "-o", out, "--input-format", "jsonl", "--output-format", "jsonl")
    assert result.code == 0, result.err
    ids, vectors = read_jsonl(out)
    assert ids == [1]
    assert_same_vectors(vectors, ["Laura is a DJ."])


def test_existing_output_needs_overwrite(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS[:1])
    out = tmp_path / "vectors.jsonl"
    out.write_text("precious\n", encoding="utf-8")
    refused = run_cli("embed", src, "-o", out)
    assert refused.code == 6
    assert "--overwrite" in refused.err
    assert out.read_text(encoding="utf-8") == "precious\n"
    assert server_env.stats["requests"] == 0
    assert run_cli("embed", src, "-o", out, "--overwrite").code == 0
    assert read_jsonl(out)[0] == [1]


def test_long_passages_are_truncated_with_one_notice(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    long_text = " ".join(["word"] * 700)
    src = write_lines(tmp_path / "corpus.txt", ["short one", long_text])
    out = tmp_path / "vectors.jsonl"
    result = run_cli("embed", src, "-o", out)
    assert result.code == 0, result.err
    assert "1 passage(s) over 512 tokens will be truncated" in result.err
    assert "(line 2)" in result.err
    # The server billed the cut text: 512 tokens, not 702.
    assert server_env.stats["tokens"] == 512 + 4


def test_progress_bar_on_a_terminal_shows_tokens_and_credits(
    server_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiml_bge_integrations.cli import main

    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    fake_tty = io.StringIO()
    fake_tty.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stderr", fake_tty)
    assert main(["embed", str(src), "-o", str(tmp_path / "v.jsonl"), "--batch-size", "2"]) == 0
    bar = fake_tty.getvalue()
    assert "5/5" in bar
    assert "passages" in bar
    assert "tokens" in bar and "credits" in bar


def test_no_progress_bar_when_not_a_terminal(server_env: Any, run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "corpus.txt", TEXTS)
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl")
    assert result.code == 0
    assert "passages/s]" not in result.err and "%|" not in result.err


def test_key_from_a_hidden_prompt_on_a_terminal(
    local_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    monkeypatch.setenv("AIMLAPI_BASE_URL", local_server.base_url)
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return str(local_server.api_key)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    monkeypatch.setattr(sys, "stdin", type("TTY", (), {"isatty": lambda self: True})())
    src = write_lines(tmp_path / "corpus.txt", TEXTS[:2])
    result = run_cli("embed", src, "-o", tmp_path / "v.jsonl")
    assert result.code == 0, result.err
    assert len(prompts) == 1 and "hidden" in prompts[0]
    assert local_server.stats["items"] == 2
