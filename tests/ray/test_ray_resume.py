"""Resume: a job that failed, or whose driver was killed, embeds only the ids not yet written."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (extra [ray])")

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import ray
from ray_helpers import ROWS, corpus, reference_vectors, vectors_of, write_corpus

from aiml_bge_integrations.errors import InvalidInputError
from aiml_bge_integrations.ray import embed_parquet
from aiml_bge_integrations.server import FaultConfig

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

ROWS_PER_BLOCK = 100
"""Small blocks, so that a failure leaves most of the corpus written and resumable."""


@pytest.fixture
def server(ray_session: dict[str, Any]) -> Iterator[Any]:
    srv = ray_session["server"]
    srv.config.faults = None
    srv.reset_stats()
    yield srv
    srv.config.faults = None


def read_output(path: Path) -> Any:
    return pq.read_table(path).sort_by("id")


def _written(out: Path) -> int:
    """Rows in the output's part files (a file under its final name is whole)."""
    if not out.exists():
        return 0
    return sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet"))


def _wait(condition: Any, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_failed_job_run_again_embeds_only_what_was_not_written(
    server: Any, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    options = {
        "base_url": server.base_url,
        "batch_size": 50,
        "actors": 1,
        "max_concurrency": 2,
        "rows_per_block": ROWS_PER_BLOCK,
    }
    # Request 31 fails for good (no retries): its block's task raises, the job stops.
    server.config.faults = FaultConfig(script=[None] * 30 + ["500"])
    with pytest.raises(Exception, match="500"):
        embed_parquet(str(source), str(out), max_retries=0, **options)
    first = server.stats.items
    written = _written(out)
    assert 0 < written < ROWS, "the failure should leave a partly written output"

    server.config.faults = None
    server.reset_stats()
    run = embed_parquet(str(source), str(out), **options)
    second = server.stats.items

    table = read_output(out)
    assert table.column("id").to_pylist() == list(range(ROWS))  # each id written once
    # The second run embeds exactly the ids not yet written ...
    assert second == ROWS - written
    assert (run.embedded, run.already_written) == (ROWS - written, written)
    # ... and the failure cost at most the block being embedded when it happened.
    assert first + second <= ROWS + ROWS_PER_BLOCK, (first, second)
    np.testing.assert_array_equal(
        vectors_of(table), reference_vectors(server, corpus().column("text").to_pylist())
    )


def test_a_missing_id_or_text_column_is_named_before_anything_is_sent(
    server: Any, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(corpus(10).rename_columns(["doc", "text", "lang"]), source)
    with pytest.raises(InvalidInputError, match=r"no column 'id'.*doc, text, lang"):
        embed_parquet(str(source), str(tmp_path / "out"), base_url=server.base_url)
    with pytest.raises(InvalidInputError, match="no column 'body'"):
        embed_parquet(
            str(source), str(tmp_path / "out"), id_column="doc", text_column="body",
            base_url=server.base_url,
        )  # fmt: skip
    assert server.stats.requests == 0
    assert not (tmp_path / "out").exists()


_DRIVER = textwrap.dedent(
    """
    import sys
    import ray
    from aiml_bge_integrations.ray import embed_parquet

    address, source, out, base_url = sys.argv[1:]
    ray.init(address=address, log_to_driver=False, configure_logging=False)
    embed_parquet(source, out, base_url=base_url, batch_size=50, actors=1,
                  max_concurrency=2, rows_per_block=100)
    print("finished")
    """
)


def test_a_job_whose_driver_was_killed_resumes_where_it_was(
    server: Any, tmp_path: Path, ray_session: dict[str, Any]
) -> None:
    source = write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    server.config.latency = 0.1  # slow enough to kill the driver halfway
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, address, str(source), str(out), server.base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert _wait(lambda: _written(out) >= 300, 120), "the driver wrote nothing"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert b"finished" not in (driver.stdout.read() if driver.stdout else b"")
    # The job's actors die with their driver: wait until nothing more reaches the server.
    server.config.latency = 0.0
    assert _wait(lambda: server.stats.in_flight == 0, 30)
    time.sleep(1.0)
    written = _written(out)
    assert 0 < written < ROWS
    first = server.stats.items
    server.reset_stats()

    embed_parquet(
        str(source),
        str(out),
        base_url=server.base_url,
        batch_size=50,
        actors=1,
        max_concurrency=2,
        rows_per_block=100,
    )
    table = read_output(out)
    assert table.column("id").to_pylist() == list(range(ROWS))  # each id written once
    # The ids not yet written, exactly; what the kill cost is at most the block in flight.
    assert server.stats.items == ROWS - written
    assert first + server.stats.items <= ROWS + ROWS_PER_BLOCK, first
    np.testing.assert_array_equal(
        vectors_of(table), reference_vectors(server, corpus().column("text").to_pylist())
    )


# -- the command line -------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: int = ROWS) -> Path:
    table = corpus(rows)
    lines = [
        orjson.dumps({"text": t, "lang": lang})
        for t, lang in zip(
            table.column("text").to_pylist(), table.column("lang").to_pylist(), strict=True
        )
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    from aiml_bge_integrations.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_ray_writes_parquet_and_resumes_after_a_failure(
    server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    source = _write_jsonl(tmp_path / "in.jsonl")
    out = tmp_path / "vectors"
    args = [
        "embed", source, "-o", out, "--ray", "--actors", "1", "--base-url", server.base_url,
        "--batch-size", "50", "--max-concurrency", "2",
    ]  # fmt: skip
    server.config.faults = FaultConfig(script=[None] * 24 + ["500"])
    code, _, err = _cli(capsys, *args, "--max-retries", "0")
    assert code == 1, err
    assert "run the same command to continue" in err
    assert server.api_key not in err
    written = _written(out)
    assert 0 < written < ROWS

    server.config.faults = None
    server.reset_stats()
    code, printed, err = _cli(capsys, *args)
    assert f"wrote {ROWS:,} vectors ({ROWS - written:,} this run, {written:,} before)" in printed
    assert code == 0, err
    assert "continuing the unfinished run" in err
    assert server.stats.items == ROWS - written
    assert not (tmp_path / "vectors.partial").exists()

    table = read_output(out)
    assert table.column_names == ["id", "text", "lang", "embedding"]
    assert table.column("id").to_pylist() == list(range(1, ROWS + 1))  # line numbers, once
    assert table.column("lang").to_pylist() == corpus().column("lang").to_pylist()
    np.testing.assert_array_equal(
        vectors_of(table), reference_vectors(server, corpus().column("text").to_pylist())
    )
    manifest = orjson.loads((tmp_path / "vectors.manifest.json").read_bytes())
    assert (manifest["rows"], manifest["dimension"]) == (ROWS, 768)
    assert manifest["base_url"] == server.base_url
    # Finished: a third run says so, sends nothing and changes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    server.reset_stats()
    code, printed, err = _cli(capsys, *args)
    assert code == 0 and "already complete" in printed, err
    assert server.stats.requests == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # Another input is not this run: the output is not replaced unasked.
    other = _write_jsonl(tmp_path / "other.jsonl", rows=5)
    code, _, err = _cli(capsys, "embed", other, *args[2:])
    assert code == 6 and "--overwrite" in err
    assert f"the input has 5 passages, the output's had {ROWS}" in err


def test_cli_dry_run_is_the_same_with_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", rows=50)
    # A name the plain run can write (it tells the format from the suffix); --ray writes a
    # directory of Parquet parts under it.
    out = tmp_path / "out.parquet"
    plain = _cli(capsys, "embed", source, "-o", out, "--dry-run")
    on_ray = _cli(capsys, "embed", source, "-o", out, "--dry-run", "--ray")
    assert plain[0] == 0 and "nothing was sent" in plain[1]
    assert on_ray == plain
    assert not out.exists()
