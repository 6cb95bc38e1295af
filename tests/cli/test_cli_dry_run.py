"""``aiml-bge embed --dry-run``: exact BGE token counts, over-limit report, estimates; no request."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import write_lines

from aiml_bge_integrations import cli
from aiml_bge_integrations._models import policy_window
from aiml_bge_integrations._settings import DEFAULT_MODEL


def field(out: str, name: str) -> str:
    """The value printed on the dry-run line starting with ``name``."""
    match = re.search(rf"^{re.escape(name)}\s+(.*)$", out, re.MULTILINE)
    assert match is not None, out
    return match.group(1)


def number(text: str) -> int:
    match = re.match(r"(?:about )?([\d,]+)", text)
    assert match is not None, text
    return int(match.group(1).replace(",", ""))


def test_laura_is_a_dj_is_seven_tokens(run_cli: Any, tmp_path: Path) -> None:
    # No key, no server: a dry run sends nothing (pytest-socket would refuse it anyway).
    src = write_lines(tmp_path / "one.txt", ["Laura is a DJ."])
    result = run_cli("embed", src, "--dry-run")
    assert result.code == 0, result.err
    assert "nothing was sent" in result.out
    assert number(field(result.out, "tokens")) == 7
    assert "1 passages" in field(result.out, "input")
    assert field(result.out, "over 512") == "none"
    assert number(field(result.out, "requests")) == 1
    assert number(field(result.out, "credits")) == 1


def test_counts_sum_over_passages_with_special_tokens(run_cli: Any, tmp_path: Path) -> None:
    # [CLS] laura is a dj . [SEP] = 7; [CLS] hello world [SEP] = 4; [CLS] cats pu ##rr . [SEP] = 6
    src = write_lines(tmp_path / "three.txt", ["Laura is a DJ.", "hello world", "Cats purr."])
    result = run_cli("embed", src, "--dry-run", "--batch-size", "2")
    assert result.code == 0
    assert number(field(result.out, "tokens")) == 17
    assert "longest passage 7" in field(result.out, "tokens")
    assert number(field(result.out, "requests")) == 2
    assert number(field(result.out, "credits")) == 2  # one per request at this size


def test_repeated_passages_are_planned_as_the_run_sends_them(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    texts = ["Laura is a DJ.", "hello world", "Laura is a DJ.", "Cats purr.", "hello world"]
    src = write_lines(tmp_path / "rep.txt", texts)
    dry = run_cli("embed", src, "--dry-run", "--batch-size", "2")
    assert dry.code == 0, dry.err
    assert number(field(dry.out, "tokens")) == 7 + 4 + 7 + 6 + 4  # every passage as written
    assert number(field(dry.out, "repeated")) == 2
    assert number(field(dry.out, "billed")) == 7 + 4 + 6
    assert number(field(dry.out, "requests")) == 2
    server_env.reset_stats()
    assert run_cli("embed", src, "-o", tmp_path / "v.jsonl", "--batch-size", "2").code == 0
    assert server_env.stats["requests"] == 2  # as the dry run said
    assert server_env.stats["items"] == 3


def test_over_limit_passages_are_reported_by_line(run_cli: Any, tmp_path: Path) -> None:
    words = " ".join(["word"] * 600)  # [CLS] + 600 + [SEP] = 602 tokens
    more = " ".join(["word"] * 1500)  # 1502 tokens
    src = write_lines(tmp_path / "long.txt", ["Laura is a DJ.", words, "hello world", more])
    result = run_cli("embed", src, "--dry-run")
    assert result.code == 0
    over = field(result.out, "over 512")
    assert over.startswith("2 passage(s)")
    assert "line 2 (602 tokens)" in over and "line 4 (1502 tokens)" in over
    assert "cut to 512" in over
    assert number(field(result.out, "tokens")) == 7 + 602 + 4 + 1502
    # Truncated, the two long ones bill 512 each: 7 + 512 + 4 + 512 = 1035 -> 2 credits.
    assert number(field(result.out, "billed")) == 1035
    assert number(field(result.out, "credits")) == 2


def test_over_limit_with_long_text_error_fails_the_dry_run(run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "long.txt", ["short", " ".join(["word"] * 600)])
    result = run_cli("embed", src, "--dry-run", "--long-text", "error")
    assert result.code == cli.EXIT_INPUT
    assert "the run will refuse them" in field(result.out, "over 512")


def test_long_text_none_bills_every_token(run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "long.txt", [" ".join(["word"] * 1500)])
    result = run_cli("embed", src, "--dry-run", "--long-text", "none")
    assert result.code == 0
    assert "sent as they are" in field(result.out, "over 512")
    assert number(field(result.out, "credits")) == 2  # 1502 tokens in one request


def test_jsonl_ids_are_named_in_the_report(run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    rows = [{"key": "a", "body": "Laura is a DJ."}, {"key": "b", "body": "word " * 600}]
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    result = run_cli(
        "embed", src, "--dry-run", "--field", "body", "--id-field", "key", "-o", tmp_path / "x.npy"
    )
    assert result.code == 0, result.err
    assert "id b (602 tokens)" in field(result.out, "over 512")
    assert "not written" in field(result.out, "output")
    assert not (tmp_path / "x.npy").exists()


def test_dry_run_reports_a_bad_line(run_cli: Any, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    result = run_cli("embed", src, "--dry-run")
    assert result.code == cli.EXIT_INPUT
    assert "line 2" in result.err and "not valid JSON" in result.err


NON_BGE = "acme/house-embedder"  # a model without a profile: no window, any dimension
E5 = "intfloat/e5-base-v2"  # another family counted exactly (768 wide, as the local server)


@pytest.mark.parametrize("model", [DEFAULT_MODEL, E5, NON_BGE])
@pytest.mark.parametrize("long_text", ["truncate", "error", "none"])
def test_the_dry_run_predicts_the_run(
    make_server: Any,
    run_cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    long_text: str,
) -> None:
    """The model's window, where the package counts it exactly: the dry run applies the
    policy exactly where the run does."""
    server = make_server(served_models=[model])
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", server.base_url)
    src = write_lines(tmp_path / "long.txt", ["short", " ".join(["word"] * 600)])
    flags = ["--model", model, "--long-text", long_text]

    dry = run_cli("embed", src, "--dry-run", *flags)
    assert server.stats["requests"] == 0
    run = run_cli("embed", src, "-o", tmp_path / "v.jsonl", *flags)
    assert dry.code == run.code, (dry.out, run.err)
    window = policy_window(model)
    policy_applies = window is not None and long_text != "none"
    assert run.code == (cli.EXIT_INPUT if policy_applies and long_text == "error" else 0)

    over = field(dry.out, f"over {window}" if window else "window")
    truncated = "were truncated" in run.out
    cut = f"cut to {window} tokens" in over
    assert cut == truncated == (policy_applies and long_text == "truncate")
    if truncated:
        assert window is not None
        billed = number(field(dry.out, "billed"))
        assert billed == number(field(dry.out, "tokens")) - 602 + window
    elif policy_applies:
        assert "the run will refuse them" in over
    else:
        assert "sent as they are" in over
        assert "billed" not in dry.out  # every token is sent, as the run sends it


def test_the_dry_run_applies_the_window_of_the_model(run_cli: Any, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "long.txt", ["short", " ".join(["word"] * 300)])
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    dry = run_cli("embed", src, "--dry-run", "--model", minilm)
    assert dry.code == 0, dry.err
    assert "cut to 256 tokens" in field(dry.out, "over 256")
    assert number(field(dry.out, "billed")) == number(field(dry.out, "tokens")) - 302 + 256
    assert field(run_cli("embed", src, "--dry-run").out, "over 512") == "none"


def test_the_dry_run_says_no_credits_for_a_server_other_than_the_aiml_api(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_lines(tmp_path / "one.txt", ["Laura is a DJ."])
    monkeypatch.delenv("AIMLAPI_BASE_URL", raising=False)
    result = run_cli("embed", src, "--dry-run", "--base-url", "http://127.0.0.1:8080/v1")
    assert result.code == 0, result.err
    assert field(result.out, "credits").startswith("no credits (http://127.0.0.1:8080/v1 is not")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://localhost:7997")
    assert field(run_cli("embed", src, "--dry-run").out, "credits").startswith("no credits")


def test_the_dry_run_checks_what_the_output_needs(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    src = write_lines(tmp_path / "one.txt", ["Laura is a DJ."])
    ok = run_cli("embed", src, "--dry-run", "-o", tmp_path / "out.jsonl")
    assert ok.code == 0, ok.err
    missing = run_cli("embed", src, "--dry-run", "-o", tmp_path / "no" / "such" / "out.jsonl")
    assert missing.code == cli.EXIT_OUTPUT and "cannot write in" in missing.err
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a),
    )
    parquet = run_cli("embed", src, "--dry-run", "-o", tmp_path / "out.parquet")
    assert parquet.code == cli.EXIT_OUTPUT and "needs pyarrow" in parquet.err


def test_the_dry_run_counts_what_the_cache_holds_without_a_request_or_a_write(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    import sqlite3

    cache = tmp_path / "cache.sqlite"
    first = [f"passage number {i}" for i in range(7)]
    later = [f"a new passage {i}" for i in range(5)]
    part = write_lines(tmp_path / "part.txt", first)
    done = run_cli("embed", part, "-o", tmp_path / "part.jsonl", "--cache", cache)
    assert done.code == 0, done.err
    # Make every entry look long unused: a lookup that marked its hits as used would write.
    with sqlite3.connect(cache) as conn:
        conn.execute("UPDATE vectors SET last_used = 0")
    conn.close()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("cache.sqlite*")}
    full = write_lines(tmp_path / "full.txt", [*later[:2], *first[:4], *later[2:], first[0]])
    server_env.reset_stats()
    dry = run_cli("embed", full, "--dry-run", "--cache", cache)
    assert dry.code == 0, dry.err
    assert field(dry.out, "cached").startswith("4 of the 9 distinct texts")
    assert server_env.stats["requests"] == 0
    after = {p.name: p.read_bytes() for p in tmp_path.glob("cache.sqlite*")}
    assert after["cache.sqlite"] == before["cache.sqlite"]
    with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT MAX(last_used) FROM vectors").fetchone()[0] == 0
    conn.close()
    # And the run then sends exactly the texts the dry run did not find.
    run = run_cli("embed", full, "-o", tmp_path / "full.jsonl", "--cache", cache)
    assert run.code == 0, run.err
    assert server_env.stats["items"] == 5


def test_the_dry_run_with_a_cache_path_not_yet_made_counts_none(
    run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "one.txt", ["Laura is a DJ."])
    result = run_cli("embed", src, "--dry-run", "--cache", tmp_path / "none.sqlite")
    assert result.code == 0, result.err
    assert field(result.out, "cached").startswith("0 of the 1 distinct")
    assert not (tmp_path / "none.sqlite").exists()
