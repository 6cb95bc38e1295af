"""One output, one run: a second ``aiml-bge embed`` of the same output refuses and touches nothing.

Two real processes against a local server slowed by latency: the first is left running (the
test waits for its first checkpoint, then keeps the server slow while the second runs); the
second, with or without ``--restart``, must exit with ``EXIT_BUSY`` before it reads or
deletes anything, and the first must then finish with every passage exactly once.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import CLI, child_env, error_lines, run_process, write_lines

from aiml_bge_integrations import cli
from aiml_bge_integrations.errors import OutputBusyError

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


def test_the_lock_is_on_the_file_at_its_path_even_if_its_holder_just_deleted_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that opened the lock file just before its holder deleted it locks the new one."""
    from aiml_bge_integrations._job import checkpoint

    out = tmp_path / "v.jsonl"
    work = checkpoint.work_dir_for(out)
    real_lock_file = checkpoint._lock_file
    calls = 0

    def holder_finishes_in_between(f: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:  # this run has opened the file; its holder now deletes the directory
            shutil.rmtree(work)
        return bool(real_lock_file(f))

    monkeypatch.setattr(checkpoint, "_lock_file", holder_finishes_in_between)
    first = checkpoint.RunLock(work, out)
    assert calls == 2  # the file it first locked was gone, so it started again
    monkeypatch.setattr(checkpoint, "_lock_file", real_lock_file)
    with pytest.raises(OutputBusyError, match="another aiml-bge embed is writing"):
        checkpoint.RunLock(work, out)  # the lock it holds is the one at the path
    first.release()
    checkpoint.RunLock(work, out).release()


def test_a_holder_that_deletes_its_work_directory_does_not_unlock_the_next_run(
    tmp_path: Path,
) -> None:
    from aiml_bge_integrations._job import checkpoint

    out = tmp_path / "v.jsonl"
    work = checkpoint.work_dir_for(out)
    first = checkpoint.RunLock(work, out)
    shutil.rmtree(work)  # as a finished run does, still holding its lock
    second = checkpoint.RunLock(work, out)  # a new directory and lock file
    first.release()
    with pytest.raises(OutputBusyError):
        checkpoint.RunLock(work, out)
    second.release()
