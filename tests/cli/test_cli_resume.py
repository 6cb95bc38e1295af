"""Resume: kill ``aiml-bge embed`` with SIGKILL mid-run, run it again, get the same bytes.

The command runs as a real process against a local server slowed by latency; the test
watches the staged files and kills the process once some batches are written. The rerun must
send exactly the passages not yet saved (the server counts them), and no more than the
batches that were in flight at the kill, and finish with output byte-identical to an
uninterrupted run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import CLI, child_env, run_process, write_lines

from aiml_bge_integrations import cli

N = 2000
BATCH = 20
CONCURRENCY = 2
TOPICS = ["moon", "bread", "chess", "rivers", "piano", "cats", "budget", "volcano"]


def corpus(path: Path) -> Path:
    return write_lines(
        path,
        [
            f"Passage {i} is about {TOPICS[i % len(TOPICS)]} and number {i * 7 % 13}."
            for i in range(N)
        ],
    )


def saved(work: Path) -> int:
    try:
        return int(orjson.loads((work / "state.json").read_bytes())["done"])
    except (OSError, ValueError):
        return 0  # not written yet (the file is replaced atomically, never half-written)


def written(work: Path) -> int:
    """Rows in the staged files so far (what a kill now would leave behind)."""
    try:
        if (work / "part.jsonl").exists():
            return (work / "part.jsonl").read_bytes().count(b"\n")
        return max(0, ((work / "vectors.bin").stat().st_size - 128) // (768 * 4))
    except OSError:
        return 0


def settled_items(server: Any) -> int:
    """Items the server accepted, once requests still on the wire from a killed client are in."""
    last = -1
    while True:
        time.sleep(0.2)
        snap = server.stats.snapshot()
        if snap["in_flight"] == 0 and snap["items"] == last:
            return int(last)
        last = snap["items"]


def outputs(out: Path) -> list[Path]:
    files = [out]
    if out.suffix == ".npy":
        files.append(out.with_name(out.stem + ".ids.jsonl"))
    return files


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".npy", ".parquet"])
def test_resume_after_sigkill_sends_no_saved_batch_again(
    make_server: Any, tmp_path: Path, suffix: str
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    server = make_server(latency=0.05)
    env = child_env(server)
    src = corpus(tmp_path / "corpus.txt")
    out = tmp_path / f"vectors{suffix}"
    work = tmp_path / f"vectors{suffix}.partial"
    args = ["embed", src, "-o", out, "--batch-size", str(BATCH)]
    args += ["--max-concurrency", str(CONCURRENCY)]

    proc = subprocess.Popen(
        [*CLI, *(str(a) for a in args)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while written(work) < N // 5:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no progress within 60 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # Killed: no file at the output path, a checkpoint on a batch boundary.
    assert not any(p.exists() for p in outputs(out))
    checkpointed = saved(work)
    left_behind = written(work)
    assert 0 < checkpointed <= left_behind < N
    assert checkpointed % BATCH == 0
    sent_first = settled_items(server)

    server.reset_stats()
    rerun = run_process(args, env)
    assert rerun.returncode == 0, rerun.stderr
    match = re.search(r"resuming: ([\d,]+) of ([\d,]+)", rerun.stderr)
    assert match is not None, rerun.stderr
    done = int(match.group(1).replace(",", ""))
    assert int(match.group(2).replace(",", "")) == N
    # Batches written after the last checkpoint are adopted, not sent again ...
    assert checkpointed <= done < N
    assert done >= left_behind - BATCH  # at most the batch being written at the kill is lost
    assert server.stats["items"] == N - done
    # ... so all that was sent twice is what was in flight at the kill.
    assert done <= sent_first <= done + 2 * CONCURRENCY * BATCH
    assert not work.exists()

    # The same command, never interrupted (and not slowed), writes the same bytes.
    server.config.latency = 0.0
    (tmp_path / "reference").mkdir()
    reference = tmp_path / "reference" / out.name
    ref_args = ["embed", src, "-o", reference, "--batch-size", str(BATCH)]
    ref = run_process(ref_args, env)
    assert ref.returncode == 0, ref.stderr
    for got, want in zip(outputs(out), outputs(reference), strict=True):
        assert got.read_bytes() == want.read_bytes(), got.name


def test_crash_while_renaming_into_place_is_finished_by_the_rerun(
    server_env: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .npy job stops after its ids sidecar was renamed but before the matrix was."""
    src = write_lines(tmp_path / "corpus.txt", [f"text {i}" for i in range(7)])
    out = tmp_path / "v.npy"
    real_replace = os.replace
    calls: list[str] = []

    def crash_on_matrix(a: Any, b: Any) -> None:
        calls.append(Path(b).name)
        if Path(b) == out:
            raise KeyboardInterrupt  # as if killed here
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", crash_on_matrix)
    assert run_cli("embed", src, "-o", out, "--batch-size", "3").code == 130
    assert "v.ids.jsonl" in calls and not out.exists()
    monkeypatch.setattr(os, "replace", real_replace)

    server_env.reset_stats()
    rerun = run_cli("embed", src, "-o", out, "--batch-size", "3")
    assert rerun.code == 0, rerun.err
    assert server_env.stats["requests"] == 0  # everything was saved already

    reference = tmp_path / "ref.npy"
    assert run_cli("embed", src, "-o", reference, "--batch-size", "3").code == 0
    assert out.read_bytes() == reference.read_bytes()
    assert (tmp_path / "v.ids.jsonl").read_bytes() == (tmp_path / "ref.ids.jsonl").read_bytes()


@pytest.mark.parametrize("suffix", [".jsonl", ".npy"])
def test_rows_past_the_checkpoint_are_adopted_and_a_torn_row_cut_off(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """As after a kill: rows written after the checkpoint, the last one cut short."""
    from aiml_bge_integrations.server import FaultConfig

    server = make_server(faults=FaultConfig(script=[None, None, None, "500"]))
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    monkeypatch.setenv("AIMLAPI_BASE_URL", server.base_url)
    src = write_lines(tmp_path / "corpus.txt", [f"text number {i}" for i in range(12)])
    out = tmp_path / f"v{suffix}"
    work = tmp_path / f"v{suffix}.partial"
    flags = ["--batch-size", "2", "--max-concurrency", "1", "--max-retries", "0"]
    assert run_cli("embed", src, "-o", out, *flags).code == 1  # 3 batches saved, then a 500
    state = orjson.loads((work / "state.json").read_bytes())
    assert state["done"] == 6

    # Wind the checkpoint back to 2 passages and tear the last staged row in half: the rows
    # for passages 3-5 are whole and adopted, passage 6's is cut off and sent again.
    staged = {name: (work / name).read_bytes() for name in state["positions"]}
    if suffix == ".jsonl":
        lines = staged["part.jsonl"].splitlines(keepends=True)
        state["positions"] = {"part.jsonl": len(b"".join(lines[:2]))}
        (work / "part.jsonl").write_bytes(b"".join(lines[:5]) + lines[5][:100])
    else:
        row = 768 * 4
        ids = staged["ids.jsonl"].splitlines(keepends=True)
        state["positions"] = {"vectors.bin": 128 + 2 * row, "ids.jsonl": len(b"".join(ids[:2]))}
        (work / "vectors.bin").write_bytes(staged["vectors.bin"][: 128 + 5 * row + 10])
    state["done"] = 2
    (work / "state.json").write_bytes(orjson.dumps(state))

    server.config.faults = None
    server.reset_stats()
    resumed = run_cli("embed", src, "-o", out, *flags)
    assert resumed.code == 0, resumed.err
    assert "resuming: 5 of 12" in resumed.err
    assert server.stats["items"] == 7

    reference = tmp_path / "ref" / out.name
    reference.parent.mkdir()
    assert run_cli("embed", src, "-o", reference, *flags).code == 0
    for got, want in zip(outputs(out), outputs(reference), strict=True):
        assert got.read_bytes() == want.read_bytes()


def test_rows_with_unexpected_ids_are_not_adopted(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    from aiml_bge_integrations.server import FaultConfig

    src = write_lines(tmp_path / "corpus.txt", ["alpha", "beta", "gamma"])
    reference = tmp_path / "ref.jsonl"
    assert run_cli("embed", src, "-o", reference).code == 0
    rows = reference.read_bytes().splitlines(keepends=True)

    out = tmp_path / "v.jsonl"
    work = tmp_path / "v.jsonl.partial"
    flags = ["--batch-size", "1", "--max-concurrency", "1", "--max-retries", "0"]
    server_env.config.faults = FaultConfig(script=[None, "500"])
    try:
        assert run_cli("embed", src, "-o", out, *flags).code == 1
    finally:
        server_env.config.faults = None
    assert orjson.loads((work / "state.json").read_bytes())["done"] == 1
    with (work / "part.jsonl").open("ab") as f:
        f.write(rows[2])  # the row of passage 3 where passage 2's is due

    server_env.reset_stats()
    resumed = run_cli("embed", src, "-o", out, *flags)
    assert resumed.code == 0, resumed.err
    assert "resuming: 1 of 3" in resumed.err
    assert server_env.stats["items"] == 2
    assert out.read_bytes() == reference.read_bytes()


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_continue(
    make_server: Any, tmp_path: Path
) -> None:
    # Slow enough (about 10 s for the whole run) that the run cannot finish between reaching
    # 10% and receiving the signal, even on a loaded machine.
    server = make_server(latency=0.2)
    env = child_env(server)
    src = corpus(tmp_path / "corpus.txt")
    out = tmp_path / "vectors.jsonl"
    work = tmp_path / "vectors.jsonl.partial"
    args = ["embed", src, "-o", out, "--batch-size", str(BATCH), "--max-concurrency", "2"]
    proc = subprocess.Popen(
        [*CLI, *(str(a) for a in args)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while written(work) < N // 10:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no progress within 60 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("aiml-bge: error:")]
    assert len(lines) == 1, err
    match = re.search(r"interrupted; ([\d,]+) of ([\d,]+) passages are saved", lines[0])
    assert match is not None, lines[0]
    done = int(match.group(1).replace(",", ""))
    # The checkpoint was brought up to date on the way out. A signal landing between a batch's
    # write and its record leaves that one batch written but not counted: a resumed run adopts
    # it once (test_cli_interrupt interrupts at every such point and checks the output).
    assert saved(work) == done
    assert done <= written(work) <= done + BATCH
    assert "run the same command to continue" in lines[0]
    assert not out.exists()


def test_a_resumed_run_records_its_model_and_base_url(
    make_server: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another base URL may finish the job, and the summary says so; another model may not."""
    from aiml_bge_integrations.server import FaultConfig

    key = "local-one-key-for-three-servers"
    first = make_server(api_key=key, faults=FaultConfig(script=[None, None, "500"]))
    second = make_server(api_key=key, faults=FaultConfig(script=[None, "500"]))
    third = make_server(api_key=key)
    monkeypatch.setenv("AIMLAPI_API_KEY", key)
    src = write_lines(tmp_path / "corpus.txt", [f"text number {i}" for i in range(10)])
    out = tmp_path / "v.jsonl"
    work = tmp_path / "v.jsonl.partial"
    flags = ["--batch-size", "2", "--max-concurrency", "1", "--max-retries", "0", "--base-url"]

    assert run_cli("embed", src, "-o", out, *flags, first.base_url).code == 1  # 4 saved
    runs = orjson.loads((work / "state.json").read_bytes())["runs"]
    assert [(r["base_url"], r["resumed_from"]) for r in runs] == [(first.base_url, 0)]

    other_model = run_cli(
        "embed", src, "-o", out, *flags, second.base_url, "--model", "BAAI/bge-small-en-v1.5"
    )
    assert other_model.code == cli.EXIT_RESUME
    assert (
        "model is 'BAAI/bge-small-en-v1.5', the unfinished run's was 'BAAI/bge-base-en-v1.5'"
        in other_model.err
    )
    assert second.stats["requests"] == 0

    assert run_cli("embed", src, "-o", out, *flags, second.base_url).code == 1  # 2 more
    runs = orjson.loads((work / "state.json").read_bytes())["runs"]
    assert [(r["base_url"], r["resumed_from"]) for r in runs] == [
        (first.base_url, 0),
        (second.base_url, 4),
    ]
    assert {r["model"] for r in runs} == {"BAAI/bge-base-en-v1.5"}

    done = run_cli("embed", src, "-o", out, *flags, third.base_url)
    assert done.code == 0, done.err
    assert third.stats["items"] == 4
    summary = " ".join(done.out.split())
    assert f"this run used {third.base_url}" in summary, done.out
    assert first.base_url in summary and second.base_url in summary, done.out

    # Finished in one go at one base URL, the summary has nothing to say about it.
    again = run_cli("embed", src, "-o", tmp_path / "w.jsonl", *flags, third.base_url)
    assert again.code == 0 and "this run used" not in again.out
