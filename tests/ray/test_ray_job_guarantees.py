"""``aiml-bge embed --ray`` keeps the command line's guarantees, on the same checkpoint.

These are decided before Ray starts, so no test here needs a Ray node: the lock is taken
before anything is read or removed, a link is never followed, only the job's own files are
replaced, and the settings are the ones the environment gives (model, long_text).
"""

from __future__ import annotations

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (extra [ray])")

import os
from pathlib import Path
from typing import Any

from aiml_bge_integrations import cli
from aiml_bge_integrations._job import checkpoint

pytestmark = pytest.mark.xdist_group("ray")


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIMLAPI_API_KEY", "sk-test-not-sent")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    path = tmp_path / "in.txt"
    path.write_text("".join(f"Passage {i} on tides.\n" for i in range(20)))
    return path


def test_a_second_run_of_the_same_output_is_refused_and_touches_nothing(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vectors"
    out.mkdir()
    (out / "part-0123.parquet").write_bytes(b"an earlier run's part")
    work = checkpoint.work_dir_for(out)
    held = checkpoint.Checkpoint(work, out, ["input.parquet"])  # a first run, still working
    (work / "state.json").write_bytes(b'{"its": "state"}')
    try:
        for extra in ([], ["--restart"], ["--restart", "--overwrite"]):
            code, _, err = _cli(capsys, "embed", corpus, "-o", out, "--ray", *extra)
            assert code == cli.EXIT_BUSY, (extra, err)
            assert "another aiml-bge embed is writing" in err
            assert (work / "state.json").read_bytes() == b'{"its": "state"}'
            assert (out / "part-0123.parquet").exists()
    finally:
        held.release()


def test_a_link_at_the_work_directory_is_refused_and_its_target_untouched(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    (precious / "state.json").write_text("mine")
    out = tmp_path / "vectors"
    checkpoint.work_dir_for(out).symlink_to(precious, target_is_directory=True)
    for extra in ([], ["--restart", "--overwrite"]):
        code, _, err = _cli(capsys, "embed", corpus, "-o", out, "--ray", *extra)
        assert code == cli.EXIT_OUTPUT, err
        assert "symbolic link" in err
        assert sorted(os.listdir(precious)) == ["state.json", "thesis.txt"]
        assert (precious / "state.json").read_text() == "mine"


def test_overwrite_replaces_only_the_jobs_own_files(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vectors"
    out.mkdir()
    (out / "part-0123.parquet").write_bytes(b"an earlier run's part")
    (out / "README.txt").write_text("someone's notes")
    code, _, err = _cli(capsys, "embed", corpus, "-o", out, "--ray", "--overwrite")
    assert code == cli.EXIT_OUTPUT, err
    assert "did not write" in err
    assert sorted(os.listdir(out)) == ["README.txt", "part-0123.parquet"]
    assert not checkpoint.work_dir_for(out).exists()


def test_the_model_and_long_text_come_from_the_environment(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    corpus.write_text("word " * 2000 + "\n")
    monkeypatch.setenv("AIMLAPI_EMBEDDING_MODEL", "BAAI/bge-small-en-v1.5")
    args = ["embed", corpus, "-o", tmp_path / "vectors", "--ray", "--long-text", "error"]
    code, _, err = _cli(capsys, *args)
    assert code == cli.EXIT_INPUT, err
    assert "BAAI/bge-small-en-v1.5" in err and "exceed the 512-token window" in err
    # A model that is not BGE: the 512-token policy does not apply, as in the core; the run
    # goes on to embed (and here finds no server).
    monkeypatch.setenv("AIMLAPI_EMBEDDING_MODEL", "nomic-embed-text")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "not a url")
    code, _, err = _cli(capsys, *args)
    assert code == cli.EXIT_USAGE and "base_url" in err, err


def test_embed_parquet_takes_the_same_lock_before_it_reads_or_removes_anything(
    tmp_path: Path,
) -> None:
    from aiml_bge_integrations.errors import OutputBusyError
    from aiml_bge_integrations.ray import embed_parquet

    out = tmp_path / "vectors"
    out.mkdir()
    (out / ".writing-0123-part-4567.parquet").write_bytes(b"a writer's temporary file")
    held = checkpoint.Checkpoint(checkpoint.work_dir_for(out), out, [])
    try:
        with pytest.raises(OutputBusyError):
            embed_parquet(str(tmp_path / "in.parquet"), str(out))
        assert (out / ".writing-0123-part-4567.parquet").exists()  # not cleaned up under it
    finally:
        held.release()
