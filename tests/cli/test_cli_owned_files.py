"""The job touches only its own files, and puts an output in place only when it checks out.

- A symbolic link where the job would create, write or delete something (the work directory,
  the output, the manifest) is refused with exit 6, and what it points to is left as it was.
- In a work directory the job did not empty itself, it deletes only the files it names.
- A checkpoint that disagrees with the staged files is refused with exit 7, naming the file;
  the output is renamed into place only once its rows match the input.
- A run that completed, run again (or killed between its last rename and its exit), says so,
  exits 0 and changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import write_lines

from aiml_bge_integrations import cli
from aiml_bge_integrations._job import JobSpec, checkpoint, run, run_job, work_dir_for
from aiml_bge_integrations.client import EmbeddingsClient

TEXTS = [f"Passage {i} about the sea and its tides." for i in range(10)]
FLAGS = ["--batch-size", "2", "--max-concurrency", "1", "-q"]

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")


def precious_dir(tmp_path: Path) -> Path:
    """A directory of someone's files, with a subdirectory."""
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.txt").write_text("years of work")
    (precious / "sub" / "data.csv").write_text("1,2,3")
    return precious


def contents(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_a_link_at_the_work_directory_is_refused_and_its_target_untouched(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    precious = precious_dir(tmp_path)
    before = contents(precious)
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.jsonl"
    work_dir_for(out).symlink_to(precious, target_is_directory=True)
    for extra in ([], ["--restart"], ["--restart", "--overwrite"]):
        got = run_cli("embed", src, "-o", out, *FLAGS, *extra)
        assert got.code == cli.EXIT_OUTPUT, (extra, got.err)
        assert "symbolic link" in got.err and "out.jsonl.partial" in got.err
        assert contents(precious) == before  # nothing deleted, nothing added (no lock, no state)
        assert sorted(os.listdir(precious)) == ["sub", "thesis.txt"]
    assert not out.exists()
    assert server_env.stats["requests"] == 0


@pytest.mark.parametrize("what", ["output", "manifest", "sidecar"])
def test_a_link_at_an_output_path_is_refused_and_its_target_untouched(
    server_env: Any, run_cli: Any, tmp_path: Path, what: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.npy"
    link = {
        "output": out,
        "manifest": run.manifest_for(out),
        "sidecar": out.with_name("out.ids.jsonl"),
    }[what]
    link.symlink_to(victim)
    got = run_cli("embed", src, "-o", out, *FLAGS, "--overwrite")
    assert got.code == cli.EXIT_OUTPUT, got.err
    assert "symbolic link" in got.err
    assert victim.read_text() == "keep me"
    assert link.is_symlink()
    assert not work_dir_for(out).exists()


def test_files_in_the_work_directory_the_job_did_not_create_are_kept(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.jsonl"
    work = work_dir_for(out)
    (work / "mine").mkdir(parents=True)
    (work / "notes.txt").write_text("not the job's")
    (work / "mine" / "a.txt").write_text("nor this")
    for extra in ([], ["--restart", "--overwrite"]):
        got = run_cli("embed", src, "-o", out, *FLAGS, *extra)
        assert got.code == 0, got.err
        assert len(out.read_bytes().splitlines()) == len(TEXTS)
        assert contents(work) == {"notes.txt": b"not the job's", "mine/a.txt": b"nor this"}


def interrupted_run(tmp_path: Path, suffix: str = ".jsonl", after: int = 2) -> tuple[Path, Path]:
    """Input and output of a run stopped (as by Ctrl-C) after ``after`` passages were saved."""
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / f"out{suffix}"

    def stop(done: int, total: int, usage: Any) -> None:
        if done >= after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(
            JobSpec(input=src, output=out),
            lambda: EmbeddingsClient(batch_size=2, max_concurrency=1),
            progress=stop,
        )
    state = orjson.loads((work_dir_for(out) / "state.json").read_bytes())
    assert state["done"] == after and not out.exists()
    return src, out


@pytest.mark.parametrize("suffix", [".jsonl", ".npy"])
@pytest.mark.parametrize("lie", [+1000, +1, -1])
def test_a_checkpoint_that_disagrees_with_the_staged_files_is_refused(
    server_env: Any, run_cli: Any, tmp_path: Path, suffix: str, lie: int
) -> None:
    src, out = interrupted_run(tmp_path, suffix, after=4)
    state_path = work_dir_for(out) / "state.json"
    state = orjson.loads(state_path.read_bytes())
    state["done"] += lie
    state_path.write_bytes(orjson.dumps(state))
    staged = "part.jsonl" if suffix == ".jsonl" else "vectors.bin"
    got = run_cli("embed", src, "-o", out, *FLAGS)
    assert got.code == cli.EXIT_RESUME, got.err
    assert staged in got.err and f"says {state['done']:,} passages are done" in got.err
    assert not out.exists()
    assert run_cli("embed", src, "-o", out, *FLAGS, "--restart").code == 0
    assert out.exists()


def test_an_output_short_of_the_input_is_not_put_in_place(
    server_env: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while finalizing; the staged file then loses a row: the rerun refuses it."""
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.jsonl"

    real_check = checkpoint.Checkpoint.check_built

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.Checkpoint, "check_built", killed)
    assert run_cli("embed", src, "-o", out, *FLAGS).code == cli.EXIT_INTERRUPTED
    monkeypatch.setattr(checkpoint.Checkpoint, "check_built", real_check)
    staged = work_dir_for(out) / "part.jsonl"
    lines = staged.read_bytes().splitlines(keepends=True)
    staged.write_bytes(b"".join(lines[:-1]))
    got = run_cli("embed", src, "-o", out, *FLAGS)
    assert got.code == cli.EXIT_RESUME, got.err
    assert f"part.jsonl holds {len(TEXTS) - 1} rows, not {len(TEXTS)}" in got.err
    assert not out.exists()


def test_a_completed_run_run_again_says_so_and_changes_nothing(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.npy"
    assert run_cli("embed", src, "-o", out, *FLAGS).code == 0
    files = [out, out.with_name("out.ids.jsonl"), run.manifest_for(out)]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    server_env.reset_stats()
    got = run_cli("embed", src, "-o", out, "--batch-size", "2")
    assert got.code == 0, got.err
    assert "already complete" in got.out
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before
    assert server_env.stats["requests"] == 0
    assert not work_dir_for(out).exists()
    # Another input (or setting) is not this run: the output is not replaced unasked.
    other = write_lines(tmp_path / "other.txt", TEXTS[:3])
    refused = run_cli("embed", other, "-o", out, *FLAGS)
    assert refused.code == cli.EXIT_OUTPUT and "pass --overwrite" in refused.err
    assert "was made otherwise" in refused.err
    assert "the input has 3 passages, the output's had 10" in refused.err
    refused = run_cli("embed", src, "-o", out, *FLAGS, "--long-text", "error")
    assert "long_text is 'error', the output's was 'truncate'" in refused.err


def test_killed_between_the_last_rename_and_its_exit_the_rerun_says_complete(
    server_env: Any, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.jsonl"
    real_remove = checkpoint.Checkpoint.remove

    def killed(self: Any) -> None:
        raise KeyboardInterrupt  # after the output and its manifest are in place

    monkeypatch.setattr(checkpoint.Checkpoint, "remove", killed)
    assert run_cli("embed", src, "-o", out, *FLAGS).code == cli.EXIT_INTERRUPTED
    monkeypatch.setattr(checkpoint.Checkpoint, "remove", real_remove)
    assert out.exists() and work_dir_for(out).exists()
    done = out.read_bytes()
    server_env.reset_stats()
    got = run_cli("embed", src, "-o", out, "--batch-size", "2")
    assert got.code == 0, got.err
    assert out.read_bytes() == done
    assert server_env.stats["requests"] == 0
    assert not work_dir_for(out).exists()
    # And with the work directory already gone, as a kill a moment later leaves it.
    got = run_cli("embed", src, "-o", out, "--batch-size", "2")
    assert got.code == 0 and "already complete" in got.out, got.err


def test_the_manifest_says_how_the_output_was_made(
    server_env: Any, run_cli: Any, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.parquet"
    assert run_cli("embed", src, "-o", out, *FLAGS).code == 0
    manifest = orjson.loads(run.manifest_for(out).read_bytes())
    assert manifest["rows"] == len(TEXTS)
    assert manifest["dimension"] == 768
    assert manifest["model"] == "BAAI/bge-base-en-v1.5"
    assert manifest["base_url"] == server_env.base_url
    assert manifest["long_text"] == "truncate"
    assert manifest["query_instruction"].startswith("Represent this sentence")
    assert manifest["identity"]["total"] == len(TEXTS)
    assert server_env.api_key not in run.manifest_for(out).read_text()
