"""Ray Data end to end against the local server: exact vectors, every id once, shared limits."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.data", reason="Ray Data is not installed (extra [ray])")

import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray_helpers import ROWS, corpus, reference_vectors, vectors_of

from aiml_bge_integrations.ray import BgeEmbedder, SyncBgeEmbedder, embed_dataset
from aiml_bge_integrations.server import FaultConfig

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture
def server(ray_session: dict[str, Any]) -> Iterator[Any]:
    """The module's server, healthy, limits off and counters zeroed; restored after the test."""
    srv = ray_session["server"]

    def restore() -> None:
        srv.config.faults = None
        srv.config.max_concurrent_requests = None
        srv.config.latency = 0.0
        srv.reset_stats()

    restore()
    yield srv
    restore()


def collect(ds: ray.data.Dataset) -> pa.Table:
    """Run the dataset and gather it into one Arrow table, sorted by id."""
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return table.sort_by("id")


def run(server: Any, table: pa.Table, **options: Any) -> pa.Table:
    ds = ray.data.from_arrow(table)
    options.setdefault("batch_size", 32)
    return collect(embed_dataset(ds, base_url=server.base_url, **options))


@pytest.fixture(scope="module")
def reference(ray_session: dict[str, Any]) -> np.ndarray:
    """The single-process client's vectors of the corpus, in id order."""
    return reference_vectors(ray_session["server"], corpus().column("text").to_pylist())


@pytest.mark.parametrize("embedder", [BgeEmbedder, SyncBgeEmbedder])
def test_vectors_are_exact_every_id_once_and_columns_kept(
    server: Any, reference: np.ndarray, embedder: type
) -> None:
    out = run(server, corpus(), actors=2, max_concurrency=4, embedder=embedder)
    assert out.column_names == ["id", "text", "lang", "embedding"]
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 768)
    assert out.column("id").to_pylist() == list(range(ROWS))
    assert out.column("text").equals(corpus().column("text"))
    assert out.column("lang").equals(corpus().column("lang"))
    np.testing.assert_array_equal(vectors_of(out), reference)
    assert server.stats.items == ROWS  # nothing embedded twice


def test_injected_429s_and_500s_still_give_every_id_once_exactly(
    server: Any, reference: np.ndarray
) -> None:
    server.config.faults = FaultConfig(
        script=["500", "429-retry-after", "503", None, "500", "drop"],
        rates={"500": 0.05, "429-retry-after": 0.05, "502": 0.03},
        seed=15,
        retry_after_seconds=0.2,
    )
    out = run(server, corpus(), actors=2, max_concurrency=4)
    faults = server.stats.faults
    assert sum(faults.values()) >= 6, faults
    assert out.column("id").to_pylist() == list(range(ROWS))
    np.testing.assert_array_equal(vectors_of(out), reference)


def test_cluster_wide_concurrency_holds_for_four_actors(server: Any) -> None:
    # The server refuses a 9th request in flight at once with 429; with 8 shared by four
    # actors (2 each), over-commitment would show up as rate_limited > 0.
    server.config.max_concurrent_requests = 8
    server.config.latency = 0.05
    out = run(server, corpus(), actors=4, max_concurrency=8, batch_size=8)
    stats = server.stats.snapshot()
    assert out.num_rows == ROWS
    assert stats["rate_limited"] == 0, stats
    assert stats["by_status"].get("429", 0) == 0, stats
    assert 2 < stats["peak_in_flight"] <= 8, stats


def test_the_key_is_nowhere_in_what_ray_stores(server: Any, ray_session: dict[str, Any]) -> None:
    from ray_checks import places_holding

    class Tagged:
        """A map class given a marker the way a key would travel if it were an argument.

        Defined here so that Ray ships it by value (workers cannot import test modules).
        """

        def __init__(self, tag: str) -> None:
            self.tag = tag

        def __call__(self, batch: Any) -> Any:
            return batch

    temp_dir = ray_session["temp_dir"]
    out = run(server, corpus(400), actors=2, max_concurrency=2)
    assert out.num_rows == 400
    # The control: an actor argument is found by the same search, so the search can fail.
    marker = "control-" + secrets.token_hex(12)
    ray.data.from_arrow(corpus(10)).map_batches(
        Tagged,
        fn_constructor_kwargs={"tag": marker},
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.25,
    ).materialize()
    assert places_holding(marker, temp_dir), "the search does not reach actor arguments"
    assert places_holding(server.api_key, temp_dir) == []


def test_every_ray_socket_is_on_loopback(ray_session: dict[str, Any]) -> None:
    from ray_checks import assert_ray_on_loopback, ray_processes

    assert_ray_on_loopback()  # again, now that actors and workers have come and gone
    # The dashboard process asks cloud metadata endpoints at start: through a closed port on
    # loopback (local_node_environment), so that nothing leaves 127.0.0.0/8.
    dashboards = [p for p in ray_processes() if "dashboard.py" in " ".join(p.cmdline())]
    assert dashboards, "no dashboard process found"
    for process in dashboards:
        assert process.environ().get("http_proxy", "").startswith("http://127.0.0.1:")
