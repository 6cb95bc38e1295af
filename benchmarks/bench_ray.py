"""Ray Data against the single-process client, on one machine: correctness and overhead.

Starts the local server in its own process with 0.2 s latency and at most 8 requests in
flight (a 9th gets 429 at once), then embeds the same N passages (default 4,000, 32 per
request) with:

- the single-process ``EmbeddingsClient`` (``max_concurrency=8``), the reference;
- ``embed_dataset`` with 1, 2 and 4 actors sharing ``max_concurrency=8`` (async
  ``BgeEmbedder``), and 2 actors with ``SyncBgeEmbedder`` (sync versus async);
- the single process and 2 actors, sync and async, against a server where 5% of the replies
  come 1 s late (a slow tail, where the two ``__call__`` kinds differ);
- a no-op map over 200 blocks and over 1: Ray Data's own cost per block, without requests.

Each Ray row gives the medians of ``--repeat`` runs (429s summed, peak the largest): the wall time, the time until the server saw the first request (start-up:
planning, worker processes, actors, clients), texts per second over the whole run and from
the first request to the last reply (the steady rate, from the server's counters polled
every 20 ms), the server's 429 count and its peak in flight. It also times a call to a Ray actor (what a
cluster-wide limiter actor would add to every request). One machine shows correctness and
overhead, not scale: every actor shares the same 8 server slots, so no actor count can beat
8 x 32 / 0.2 = 1,280 texts/s here (see docs/ray.md for the model of how it scales).

Not part of the test suite. Usage::

    python benchmarks/bench_ray.py [--n 4000] [--actors 1,2,4] [--repeat 3]
    python benchmarks/bench_ray.py --kinds async,embed_parquet --no-extras   # the resumable path only

``--kinds`` picks the Ray rows (``async``, ``sync``, ``limiter``, ``embed_parquet``, and
``embed_parquet-one-block``, the resumable path run one block per actor at a time as it was
before its blocks were pipelined, and ``embed_parquet-four-blocks``, four quarter-size blocks
at a time; default all but the last two), ``--no-extras`` skips the slow-tail, no-op and actor-call sections.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Read by Ray when it is imported: a single local node on 127.0.0.1, no usage reporting.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from _common import API_KEY, ServerProcess, machine_description, make_passages, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ray"))

LATENCY = 0.2
CAP = 8
BATCH = 32


def _table(texts: list[str]) -> Any:
    import pyarrow as pa

    return pa.table({"id": pa.array(range(len(texts)), type=pa.int64()), "text": texts})


def _run_single(server: ServerProcess, texts: list[str]) -> float:
    from aiml_bge_integrations import EmbeddingsClient

    with EmbeddingsClient(
        api_key=API_KEY, base_url=server.base_url, batch_size=BATCH, max_concurrency=CAP
    ) as client:
        start = time.perf_counter()
        vectors = client.embed_documents(texts)
        seconds = time.perf_counter() - start
    assert len(vectors) == len(texts)
    return seconds


class _FirstAndLast:
    """Polls the server's counters: when the first text and the last of ``n`` were accepted."""

    def __init__(self, server: ServerProcess, n: int) -> None:
        self.first = self.last = 0.0
        self._server, self._n = server, n
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            items = int(self._server.stats()["items"])
            now = time.perf_counter()
            if items and not self.first:
                self.first = now
            if items >= self._n and not self.last:
                self.last = now
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _timed(server: ServerProcess, n: int, run: Any) -> tuple[float, float, float]:
    """Wall seconds of ``run()``, seconds to the first request, texts/s first to last request."""
    server.reset_stats()
    start = time.perf_counter()
    watch = _FirstAndLast(server, n)
    rows = run()
    end = time.perf_counter()
    watch.stop()
    assert rows == n, rows
    # The last request was accepted at ``last`` and answered LATENCY later.
    steady = n / (watch.last + LATENCY - watch.first)
    return end - start, watch.first - start, steady


def _run_ray(
    server: ServerProcess, texts: list[str], actors: int, embedder: type
) -> tuple[float, float, float]:
    """``embed_dataset``, the limit split between the actors."""
    import ray

    from aiml_bge_integrations.ray import embed_dataset

    ds = ray.data.from_arrow(_table(texts))
    out = embed_dataset(
        ds,
        actors=actors,
        max_concurrency=CAP,
        batch_size=BATCH,
        base_url=server.base_url,
        embedder=embedder,
    )
    return _timed(server, len(texts), lambda: sum(len(t) for t in ray.get(out.to_arrow_refs())))


# -- the alternative to the split: one limiter actor that every request asks for a slot --------


class _Slots:
    """A cluster-wide semaphore as a Ray actor (async: a waiting acquire blocks nothing else)."""

    def __init__(self, slots: int) -> None:
        import asyncio

        self._free = asyncio.Semaphore(slots)

    async def acquire(self) -> None:
        await self._free.acquire()

    def release(self) -> None:
        self._free.release()


def _slot_embedder() -> type:
    from aiml_bge_integrations.ray import BgeEmbedder

    class SlotEmbedder(BgeEmbedder):
        """Each request of a block waits for a slot of the shared ``_Slots`` actor, then is sent."""

        def __init__(self, *, slots: Any, **settings: Any) -> None:
            # The actor's slots bound what is in flight, not the client.
            super().__init__(max_concurrency=CAP, adaptive_concurrency=False, **settings)
            self._slots = slots

        async def _one(self, texts: list[str]) -> list[list[float]]:
            await self._slots.acquire.remote()
            try:
                vectors: list[list[float]] = await self._client.embed_documents(texts)
                return vectors
            finally:
                self._slots.release.remote()

        async def __call__(self, batch: Any) -> Any:
            import asyncio

            texts = self._texts(batch)
            chunks = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
            parts = await asyncio.gather(*(self._one(c) for c in chunks))
            return self._append(batch, [v for part in parts for v in part])

    return SlotEmbedder


def _run_limiter_actor(
    server: ServerProcess, texts: list[str], actors: int
) -> tuple[float, float, float]:
    """The same job with the limit held by a ``_Slots`` actor instead of a split."""
    import ray

    slots = ray.remote(num_cpus=0.1)(_Slots).remote(CAP)
    ds = ray.data.from_arrow(_table(texts)).repartition(
        target_num_rows_per_block=2 * BATCH * CAP // actors
    )
    out = ds.map_batches(
        _slot_embedder(),
        fn_constructor_kwargs={"slots": slots, "base_url": server.base_url, "batch_size": BATCH},
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0.25,
    )
    try:
        return _timed(server, len(texts), lambda: sum(len(t) for t in ray.get(out.to_arrow_refs())))
    finally:
        ray.kill(slots)


def _run_parquet(
    server: ServerProcess, texts: list[str], actors: int, in_flight: int | None = None
) -> tuple[float, float, float]:
    """``embed_parquet``: read, embed and write from each actor.

    ``in_flight`` 1 runs it as it ran before its blocks were pipelined: one block of
    ``rows_per_block`` per actor at a time (the same bound on lost work, in rows).
    """
    import pyarrow.parquet as pq

    from aiml_bge_integrations import ray as ray_module
    from aiml_bge_integrations.ray import embed_parquet

    saved = ray_module._BLOCKS_IN_FLIGHT
    if in_flight is not None:
        ray_module._BLOCKS_IN_FLIGHT = in_flight

    work = Path(tempfile.mkdtemp(prefix="rbp", dir="/tmp"))
    try:
        pq.write_table(_table(texts), work / "in.parquet")

        def run() -> int:
            done = embed_parquet(
                str(work / "in.parquet"),
                str(work / "out"),
                actors=actors,
                max_concurrency=CAP,
                batch_size=BATCH,
                base_url=server.base_url,
            )
            return done.embedded

        return _timed(server, len(texts), run)
    finally:
        ray_module._BLOCKS_IN_FLIGHT = saved
        shutil.rmtree(work, ignore_errors=True)


class _NoOp:
    def __call__(self, batch: Any) -> Any:
        return batch


def _run_noop(texts: list[str], blocks: int) -> float:
    import ray

    ds = ray.data.from_arrow(_table(texts)).repartition(
        target_num_rows_per_block=-(-len(texts) // blocks)
    )
    out = ds.map_batches(
        _NoOp,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.25,
    )
    start = time.perf_counter()
    ray.get(out.to_arrow_refs())
    return time.perf_counter() - start


def _actor_call_ms(calls: int = 300) -> float:
    import ray

    @ray.remote(num_cpus=0.1)
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def reserve(self) -> int:
            self.n += 1
            return self.n

    counter = Counter.remote()
    ray.get(counter.reserve.remote())
    start = time.perf_counter()
    for _ in range(calls):
        ray.get(counter.reserve.remote())
    ms = (time.perf_counter() - start) / calls * 1000
    ray.kill(counter)
    return ms


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="passages (default 4000)")
    parser.add_argument("--actors", default="1,2,4", help="actor counts (default 1,2,4)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per Ray row; medians shown (default 3)"
    )
    parser.add_argument(
        "--kinds",
        default="async,sync,limiter,embed_parquet",
        help="Ray rows to run (default: async,sync,limiter,embed_parquet)",
    )
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the slow-tail, no-op map and actor-call sections",
    )
    args = parser.parse_args(argv)
    kinds = set(args.kinds.split(","))
    actor_counts = [int(a) for a in args.actors.split(",")]
    texts = make_passages(args.n)
    ideal = CAP * BATCH / LATENCY

    server = ServerProcess(latency=LATENCY, max_concurrent_requests=CAP).start()
    temp_dir = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    rows: list[list[object]] = []
    tail_rows: list[list[object]] = []
    try:
        import ray

        from aiml_bge_integrations._ray_job import local_node_environment
        from aiml_bge_integrations.ray import BgeEmbedder, SyncBgeEmbedder

        # Inherited by the node's processes only: the key, and what keeps their own traffic
        # on loopback (Ray's dashboard asks cloud metadata endpoints at start).
        node_env = {"AIMLAPI_API_KEY": API_KEY, **local_node_environment()}
        os.environ.update(node_env)
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=8,
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=temp_dir,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        for name in node_env:
            os.environ.pop(name)

        def stats() -> tuple[int, int]:
            s = server.stats()
            return int(s["by_status"].get("429", 0)), int(s["peak_in_flight"])

        server.reset_stats()
        seconds = _run_single(server, texts)
        refused, peak = stats()
        rows.append(
            ["single process, max_concurrency=8", f"{seconds:.2f}", "-", f"{args.n / seconds:,.0f}",
             "-", refused, peak]
        )  # fmt: skip
        configs: list[tuple[int, str, Any]] = []
        for a in actor_counts:
            # Interleaved per actor count, so that the rows compared ran one after the other.
            if "async" in kinds:
                configs.append((a, "async", lambda a=a: _run_ray(server, texts, a, BgeEmbedder)))
            if "sync" in kinds and a == 2:
                configs.append((2, "sync", lambda: _run_ray(server, texts, 2, SyncBgeEmbedder)))
            if "limiter" in kinds:
                configs.append(
                    (a, "limiter actor", lambda a=a: _run_limiter_actor(server, texts, a))
                )
            if "embed_parquet" in kinds:
                configs.append((a, "embed_parquet", lambda a=a: _run_parquet(server, texts, a)))
            if "embed_parquet-one-block" in kinds:
                configs.append(
                    (a, "embed_parquet, one block at a time",
                     lambda a=a: _run_parquet(server, texts, a, in_flight=1))
                )  # fmt: skip
            if "embed_parquet-four-blocks" in kinds:
                configs.append(
                    (a, "embed_parquet, four quarter blocks at a time",
                     lambda a=a: _run_parquet(server, texts, a, in_flight=4))
                )  # fmt: skip
        for actors, kind, job in configs:
            runs = []
            for _ in range(args.repeat):
                server.reset_stats()
                seconds, first, steady = job()
                refused, peak = stats()
                runs.append((seconds, first, steady, refused, peak))
            seconds, first, steady = (statistics.median(r[i] for r in runs) for i in range(3))
            refused, peak = sum(r[3] for r in runs), max(r[4] for r in runs)
            rows.append(
                [f"Ray, {actors} actor(s), {kind}, 8 shared", f"{seconds:.2f}", f"{first:.2f}",
                 f"{args.n / seconds:,.0f}", f"{steady:,.0f}", refused, peak]
            )  # fmt: skip
        if args.no_extras:
            return _print_rows(args.n, ideal, rows)
        # Sync or async: the same with a slow tail (5% of replies 1 s late), where a
        # synchronous actor waits for its block's slowest request with its other slots idle.
        slow = ServerProcess(
            latency=LATENCY,
            max_concurrent_requests=CAP,
            extra_args=("--fault-rate", "slow=0.05", "--slow-seconds", "1", "--fault-seed", "7"),
        ).start()
        try:
            seconds = _run_single(slow, texts)
            tail_rows.append(["single process, max_concurrency=8", f"{args.n / seconds:,.0f}"])
            for embedder, kind in ((BgeEmbedder, "async"), (SyncBgeEmbedder, "sync")):
                steadies = [_run_ray(slow, texts, 2, embedder)[2] for _ in range(args.repeat)]
                tail_rows.append(
                    [f"Ray, 2 actors, {kind}, 8 shared", f"{statistics.median(steadies):,.0f}"]
                )
        finally:
            slow.stop()
        blocks = 200
        noop = min(_run_noop(texts, blocks) for _ in range(2))
        noop_one = min(_run_noop(texts, 1) for _ in range(2))
        per_block_ms = (noop - noop_one) / (blocks - 1) * 1000
        call_ms = _actor_call_ms()
    finally:
        import ray

        ray.shutdown()
        server.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
    _print_rows(args.n, ideal, rows)
    print(
        f"\nRay Data overhead: a no-op map (2 actors) over {blocks} blocks took {noop:.2f} s, "
        f"over 1 block {noop_one:.2f} s (best of 2): {per_block_ms:.1f} ms per extra block "
        "(one batch each)."
    )
    print("\nWith 5% of replies 1 s late (texts/s; Ray: first to last request, median):")
    print(markdown_table(["run", "texts/s"], tail_rows))
    print(f"A call to a Ray actor (what a limiter actor adds per request): {call_ms:.2f} ms.")
    return 0


def _print_rows(n: int, ideal: float, rows: list[list[object]]) -> int:
    print(
        f"{n:,} passages, {BATCH} per request; server {LATENCY} s latency, at most {CAP} "
        f"in flight (ceiling {ideal:,.0f} texts/s)"
    )
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_description().items()))
    print(
        markdown_table(
            [
                "run",
                "wall s",
                "to first request s",
                "texts/s",
                "texts/s, first to last request",
                "429s",
                "peak in flight",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
