"""The Ray module without a Ray session: limit shares, refused settings, the public surface."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (extra [ray])")

import inspect
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import aiml_bge_integrations.ray as ray_module
from aiml_bge_integrations.errors import (
    ConfigurationError,
    InvalidInputError,
    MissingAPIKeyError,
)
from aiml_bge_integrations.ray import (
    BgeEmbedder,
    SyncBgeEmbedder,
    embed_dataset,
    embed_parquet,
    split_limits,
)


@pytest.mark.parametrize(
    ("actors", "cap", "rpm", "tpm"),
    [
        (4, 8, 600, 100_000),
        (3, 8, 100, None),
        (1, 5, None, 7.5),
        (6, 4, 60, 60),
        (7, 7, None, None),
    ],
)
def test_shares_never_add_up_to_more_than_the_limits(
    actors: int, cap: int, rpm: float | None, tpm: float | None
) -> None:
    share = split_limits(actors, cap, rpm, tpm)
    assert 1 <= share.actors <= actors
    assert share.max_concurrency >= 1
    assert share.actors * share.max_concurrency <= cap
    if rpm is None:
        assert share.requests_per_minute is None
    else:
        assert share.requests_per_minute is not None
        assert share.actors * share.requests_per_minute <= rpm * (1 + 1e-12)
    if tpm is not None:
        assert share.tokens_per_minute is not None
        assert share.actors * share.tokens_per_minute <= tpm * (1 + 1e-12)


def test_more_actors_than_slots_start_one_actor_per_slot() -> None:
    share = split_limits(6, 4)
    assert (share.actors, share.max_concurrency) == (4, 1)


@pytest.mark.parametrize(
    "bad", [{"actors": 0}, {"max_concurrency": 0}, {"requests_per_minute": -1.0}]
)
def test_bad_limits_are_refused(bad: dict[str, float]) -> None:
    args = {"actors": 2, "max_concurrency": 4, **bad}
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        split_limits(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["api_key", "http_client", "rate_limiter"])
def test_settings_that_cannot_travel_are_refused_before_ray_runs(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        embed_dataset(None, **{name: "sk-never-shipped"})  # type: ignore[arg-type]


def test_bad_client_settings_are_refused_on_the_driver() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        embed_dataset(None, timeout=-1)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [BgeEmbedder, SyncBgeEmbedder])
def test_an_actor_without_the_key_says_which_variable_to_set(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_BGE_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="MY_BGE_KEY"):
        cls(api_key_env="MY_BGE_KEY")


def test_public_names_are_documented() -> None:
    assert ray_module.__doc__
    for name in ray_module.__all__:
        obj = getattr(ray_module, name)
        assert inspect.getdoc(obj), name


# -- embed_parquet's own checkpoint: the part files of the output directory -------------------


def _part(directory: Path, ids: list[int]) -> Path:
    from aiml_bge_integrations.ray import _part_name

    path = directory / _part_name(pa.array(ids, type=pa.int64()))
    pq.write_table(pa.table({"id": pa.array(ids, type=pa.int64()), "text": ["t"] * len(ids)}), path)
    return path


def test_the_ids_written_are_read_from_whole_part_files_only(tmp_path: Path) -> None:
    from aiml_bge_integrations.ray import _filesystem, _written_ids

    _part(tmp_path, [3, 1, 2])
    _part(tmp_path, [7])
    (tmp_path / ".writing-0123-part-x.parquet").write_bytes(b"half a file")
    (tmp_path / "notes.txt").write_text("not ours")
    fs, directory = _filesystem(str(tmp_path))
    written = _written_ids(fs, directory, "id")
    assert written is not None
    assert sorted(written.to_pylist()) == [1, 2, 3, 7]
    # What a killed writer left half-written is removed; other files are left alone.
    assert not (tmp_path / ".writing-0123-part-x.parquet").exists()
    assert (tmp_path / "notes.txt").exists()
    assert _written_ids(fs, str(tmp_path / "new"), "id") is None


def test_an_id_written_twice_is_an_error_naming_the_column(tmp_path: Path) -> None:
    from aiml_bge_integrations.ray import _filesystem, _written_ids

    _part(tmp_path, [1, 2])
    _part(tmp_path, [2, 3])
    fs, directory = _filesystem(str(tmp_path))
    with pytest.raises(InvalidInputError, match="'id' more than once"):
        _written_ids(fs, directory, "id")


def test_a_block_written_again_replaces_its_own_file() -> None:
    from aiml_bge_integrations.ray import _part_name

    same = _part_name(pa.array([5, 6, 7]))
    assert same == _part_name(pa.chunked_array([[5], [6, 7]]))
    assert same != _part_name(pa.array([5, 6, 8]))
    assert same != _part_name(pa.array(["5", "6", "7"]))


def test_embed_parquet_refuses_another_embedder_before_ray_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="embedder"):
        embed_parquet(str(tmp_path), str(tmp_path / "out"), embedder=SyncBgeEmbedder)


def test_a_local_node_sends_its_own_plain_http_to_a_closed_loopback_port() -> None:
    from aiml_bge_integrations._ray_job import local_node_environment

    env = local_node_environment("http://gpu-box:8080/v1")
    assert env["http_proxy"].startswith("http://127.0.0.1:")
    # The server the actors talk to, and loopback, are reached directly.
    assert env["no_proxy"].split(",") == ["127.0.0.1", "localhost", "::1", "gpu-box"]
    assert local_node_environment()["no_proxy"] == "127.0.0.1,localhost,::1"
