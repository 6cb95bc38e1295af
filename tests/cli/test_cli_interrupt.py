"""Ctrl-C at any point of the embedding loop, then the same command: every passage exactly once.

A real Ctrl-C raises ``KeyboardInterrupt`` between any two lines of the main thread, among them
the lines between a batch's write and the record that it was written. The test injects it
there through a trace function: a dry pass counts the lines the job runs in its embedding loop
(``_job.run._embed_rest`` and the functions nested in it), then for each of those line events in
turn a run is interrupted just before that line, and the same command is run again. Every
resumed output must equal an uninterrupted run's, byte for byte: no row twice, none missing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import orjson
import pytest
from cli_helpers import write_lines
from scripted_server import ScriptedServer

from aiml_bge_integrations import cli
from aiml_bge_integrations._job import run

# Batches of 2, 2 and 1 sent; the repeats get their vectors from the rows written before,
# or from the rows not yet written.
TEXTS = [f"Passage {i} of a small corpus." for i in (0, 1, 0, 2, 3, 1, 3, 4, 4, 0)]
FLAGS = ["--batch-size", "2", "--max-concurrency", "1", "-q"]
LONG = " ".join(["word"] * 600)
"""Over the 512-token window: with ``--long-text error --on-error record`` a row with an error."""
BAD = "A passage the server refuses."
"""Refused by the scripted server with 422 naming it: with ``--on-error record`` an error row."""
RECORDING = [*TEXTS[:3], LONG, BAD, *TEXTS[3:7], LONG, *TEXTS[7:9], BAD, TEXTS[9]]


def loop_codes() -> set[CodeType]:
    """The code of ``_embed_rest`` and of every function defined inside it."""
    found: set[CodeType] = set()
    todo = [run._embed_rest.__code__]
    while todo:
        code = todo.pop()
        found.add(code)
        todo += [c for c in code.co_consts if isinstance(c, CodeType)]
    return found


@contextmanager
def interrupt_before_line(event: int | None, counted: list[int]) -> Iterator[None]:
    """Raise ``KeyboardInterrupt`` before the ``event``-th line run in the loop (``None``: never).

    ``counted[0]`` is set to how many loop lines ran (up to the interruption).
    """
    codes = loop_codes()
    counted[:] = [0]

    def local(frame: FrameType, kind: str, arg: Any) -> Any:
        if kind == "line":
            if counted[0] == event:
                counted[0] += 1
                sys.settrace(None)
                frame.f_trace = None
                raise KeyboardInterrupt
            counted[0] += 1
        return local

    def on_call(frame: FrameType, kind: str, arg: Any) -> Any:
        return local if frame.f_code in codes else None

    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("suffix", "recording"),
    [(".jsonl", False), (".npy", False), (".jsonl", True), (".parquet", True)],
)
def test_ctrl_c_at_any_line_of_the_loop_then_resume_writes_each_row_once(
    server_env: Any,
    run_cli: Any,
    tmp_path: Path,
    suffix: str,
    recording: bool,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if sys.gettrace() is not None:
        pytest.skip("another tracer (coverage, a debugger) is active")
    if recording:  # a server that refuses BAD, naming it
        scripted = ScriptedServer()
        request.addfinalizer(scripted.close)
        scripted.refuse.add(BAD)
        monkeypatch.setenv("AIMLAPI_BASE_URL", scripted.base_url)
        monkeypatch.setenv("AIMLAPI_API_KEY", "k")
    texts = RECORDING if recording else TEXTS
    flags = [*FLAGS, "--long-text", "error", "--on-error", "record"] if recording else FLAGS
    finished = cli.EXIT_PARTIAL if recording else cli.EXIT_OK
    src = write_lines(tmp_path / "corpus.txt", texts)
    reference = tmp_path / f"reference{suffix}"
    counted = [0]
    with interrupt_before_line(None, counted):
        assert run_cli("embed", src, "-o", reference, *flags).code == finished
    lines = counted[0]
    assert lines > 20  # the loop was traced

    def output_files(out: Path) -> list[bytes]:
        files = [out]
        if suffix == ".npy":
            files.append(out.with_name(out.stem + ".ids.jsonl"))
        return [f.read_bytes() for f in files]

    want = output_files(reference)
    for event in range(lines):
        out = tmp_path / f"run{event}" / f"v{suffix}"
        out.parent.mkdir()
        with interrupt_before_line(event, counted):
            first = run_cli("embed", src, "-o", out, *flags)
        assert first.code == cli.EXIT_INTERRUPTED, (event, first.err)
        resumed = run_cli("embed", src, "-o", out, *flags)
        assert resumed.code == finished, (event, resumed.err)
        got = output_files(out)
        if suffix == ".jsonl":
            ids = [orjson.loads(line)["id"] for line in got[0].splitlines()]
            assert ids == list(range(1, len(texts) + 1)), (event, ids)
        assert got == want, event
        if recording:  # every refused row counted once, whichever run wrote it
            manifest = orjson.loads(run.manifest_for(out).read_bytes())
            assert manifest["errors"] == 4, (event, manifest["errors"])
