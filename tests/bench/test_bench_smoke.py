"""The benchmark runs end to end at tiny sizes: a smoke test, not a measurement.

Nothing here looks at a timing. It checks that the script starts the server in its own
process, runs contestants in fresh processes, checks their vectors, streams, parses, runs the
adaptive rows, and writes its JSON, Markdown and PNG, so that ``make bench`` cannot rot unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# One xdist worker runs every test here: the report fixture, module-scoped, would otherwise
# run the benchmark once on each worker that gets a test of this module.
pytestmark = pytest.mark.xdist_group("bench")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_throughput.py"
N = 300
ADAPTIVE_N = 512


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--n",
            str(N),
            "--latency",
            "0.01",
            "--only",
            "core-sync,core-async-b64,openai-sdk-loop,reference-httpx",
            "--stream-small",
            "256",
            "--stream-large",
            "512",
            "--parse-vectors",
            "128",
            "--parse-rounds",
            "1",
            # The adaptive rows at their default size (12,288 texts x 5 servers x 3 clients)
            # took over three minutes; one server whose capacity changes mid-run, with every
            # client, runs the same code.
            "--adaptive-n",
            str(ADAPTIVE_N),
            "--adaptive-servers",
            "drop-12-4-12",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data: dict[str, Any] = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    data["_out"] = str(out)
    data["_stdout"] = proc.stdout
    return data


@pytest.mark.slow
def test_every_contestant_returns_every_vector_exactly(report: dict[str, Any]) -> None:
    rows = report["throughput"]["rows"]
    assert [r["key"] for r in rows] == [
        "core-sync",
        "core-async-b64",
        "openai-sdk-loop",
        "reference-httpx",
    ]
    for row in rows:
        assert row["check"]["exact"] == N, row
        assert row["check"]["python_floats"], row
        assert row["requests"] >= (N + 127) // 128


@pytest.mark.slow
def test_the_encoding_each_client_asked_for_is_recorded(report: dict[str, Any]) -> None:
    enc = {r["key"]: r["encoding"] for r in report["throughput"]["rows"]}
    assert enc["openai-sdk-loop"] == "base64"  # the SDK's default
    assert enc["core-async-b64"] == "base64"
    assert enc["core-sync"].startswith("none sent")


@pytest.mark.slow
def test_parse_stream_import_and_targets_are_reported(report: dict[str, Any]) -> None:
    parse = report["parse"]
    names = {r["name"] for r in parse["rows"]}
    assert "orjson.loads alone (floor)" in names
    assert all(r["cpu_ms_per_1k"] > 0 for r in parse["rows"])
    runs = report["stream"]["runs"]
    assert [(r["mode"], r["n"], r["count"], r["wrong"]) for r in runs] == [
        ("sync", 256, 256, 0),
        ("sync", 512, 512, 0),
        ("async", 256, 256, 0),
        ("async", 512, 512, 0),
    ]
    assert all(not r["numpy_loaded"] for r in runs)  # the streaming process holds the client only
    assert report["import"]["heavy_loaded"] == []
    targets = {t["target"] for t in report["targets"]}
    assert any("langchain-openai" not in t and "import" in t for t in targets)
    assert any(t.startswith("parse CPU") for t in targets)


@pytest.mark.slow
def test_table_json_and_chart_are_written(report: dict[str, Any]) -> None:
    out = Path(str(report["_out"]))
    table = (out / "bench.md").read_text(encoding="utf-8")
    assert "| **core EmbeddingsClient (sync)** |" in table
    assert "### Targets" in table and "### Throughput" in table
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Targets" in str(report["_stdout"])


@pytest.mark.slow
def test_adaptive_rows_run_each_client(report: dict[str, Any]) -> None:
    rows = report["adaptive"]["rows"]
    assert [(r["server"], r["client"]) for r in rows] == [
        ("drop-12-4-12", "default"),
        ("drop-12-4-12", "tuned"),
        ("drop-12-4-12", "langchain-openai"),
    ]
    for row in rows:
        assert "failed" not in row and row["texts_per_s"] > 0, row
        assert row["requests"] >= (ADAPTIVE_N + 127) // 128, row
    assert rows[1]["limit_end"] == 12  # the tuned client keeps its setting


def test_the_client_cpu_benchmark_prints_each_row() -> None:
    script = REPO / "benchmarks" / "bench_client_cpu.py"
    args = ["--n", "200", "--rounds", "1", "--alternations", "1"]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [
        line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")
    ]
    assert rows[1:] == ["default", "without-range-check", "collector-off"]
