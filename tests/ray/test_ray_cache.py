"""The embedding cache on Ray: a second run over the same data sends no embedding request.

One small test on the shared single-node session (tests/ray/conftest.py): ``aiml-bge embed
--ray --cache PATH`` twice over 200 passages into two outputs; the actors of the second run
find every vector in the cache file. The manifest names the model as the server served it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (extra [ray])")

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
from ray_helpers import vectors_of

from aiml_bge_integrations.cli import main
from aiml_bge_integrations.ray import SERVED_MODEL_METADATA

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

ROWS = 200


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_second_ray_run_with_the_same_cache_sends_no_request(
    ray_session: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ray_session["server"]
    server.config.faults = None
    monkeypatch.setenv("AIMLAPI_API_KEY", server.api_key)
    source = tmp_path / "in.txt"
    source.write_text("".join(f"cached passage number {i}\n" for i in range(ROWS)))
    cache = tmp_path / "cache.sqlite"
    flags = [
        "--ray", "--actors", "2", "--base-url", server.base_url, "--batch-size", "25",
        "--cache", cache,
    ]  # fmt: skip

    server.reset_stats()
    code, _, err = _cli(capsys, "embed", source, "-o", tmp_path / "first", *flags)
    assert code == 0, err
    assert server.stats.items == ROWS

    server.reset_stats()
    code, _, err = _cli(capsys, "embed", source, "-o", tmp_path / "second", *flags)
    assert code == 0, err
    assert server.stats.requests == 0  # every vector came from the cache file

    first = pq.read_table(tmp_path / "first").sort_by("id")
    second = pq.read_table(tmp_path / "second").sort_by("id")
    assert second.column("id").to_pylist() == list(range(1, ROWS + 1))
    np.testing.assert_allclose(vectors_of(second), vectors_of(first), rtol=0, atol=1e-7)

    manifest = orjson.loads((tmp_path / "first.manifest.json").read_bytes())
    assert manifest["model_served"] == manifest["model"] == "BAAI/bge-base-en-v1.5"
    part = next((tmp_path / "first").glob("part-*.parquet"))
    metadata = pq.read_schema(part).metadata or {}
    assert metadata[SERVED_MODEL_METADATA] == b"BAAI/bge-base-en-v1.5"
