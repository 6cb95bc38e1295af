"""One output, one run: a second ``aiml-bge embed`` of the same output refuses and touches nothing.

Two real processes against a local server slowed by latency: the first is left running (the
test waits for its first checkpoint, then keeps the server slow while the second runs); the
second, with or without ``--restart``, must exit with ``EXIT_BUSY`` before it reads or
deletes anything, and the first must then finish with every passage exactly once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from cli_helpers import CLI, child_env, error_lines, run_process, write_lines

from aiml_bge_integrations import cli

N = 300


def saved(work: Path) -> int:
    """Passages in the first run's checkpoint (0 before it writes one)."""
    try:
        return int(orjson.loads((work / "state.json").read_bytes())["done"])
    except (OSError, ValueError):
        return 0


def test_a_second_run_of_a_running_job_refuses_and_touches_nothing(
    make_server: Any, tmp_path: Path
) -> None:
    # 30 requests of 1 s each: the first run lasts until the test lowers the latency.
    server = make_server(latency=1.0)
    env = child_env(server)
    src = write_lines(tmp_path / "in.txt", [f"Passage {i} of the corpus." for i in range(N)])
    out = tmp_path / "out.jsonl"
    work = tmp_path / "out.jsonl.partial"
    args = ["embed", src, "-o", out, "--batch-size", "10", "--max-concurrency", "1"]
    first = subprocess.Popen(
        [*CLI, *(str(a) for a in args)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while saved(work) == 0:
            assert first.poll() is None, "the first run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        for extra in (["--restart"], [], ["--restart", "--overwrite"]):
            second = run_process([*args, *extra], env)
            assert second.returncode == cli.EXIT_BUSY, (extra, second.returncode, second.stderr)
            lines = error_lines(second.stderr)
            assert len(lines) == 1, second.stderr
            assert "another aiml-bge embed" in lines[0] and str(out) in lines[0], lines[0]
            # The refusal was tested against a live run, not one that had already finished.
            assert first.poll() is None, "the first run finished while the second ran"
        server.config.latency = 0.0
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=30)
    assert first.returncode == 0, err
    ids = [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()]
    assert ids == list(range(1, N + 1))
    assert server.stats["items"] == N  # the refused runs sent nothing
    assert not work.exists()
