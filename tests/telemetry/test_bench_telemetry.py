"""The telemetry micro-benchmark runs and prints a row per variant (a smoke test: no timing checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_telemetry.py"


def test_the_benchmark_prints_every_variant() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--calls",
            "20",
            "--rounds",
            "1",
            "--attempts",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["variant"] for r in rows] == ["off", "api", "sdk", "sdk+attempts"]
    assert all(r["us_per_call"] >= 0 for r in rows)
