"""The embedding cache: keys, storage, eviction, sharing between processes and threads, refusals."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aiml_bge_integrations._cache import (
    APPLICATION_ID,
    CacheFileError,
    CacheStats,
    EmbeddingCache,
    alookup_batch,
    cache_key,
    lookup_batch,
)
from aiml_bge_integrations.errors import ConfigurationError

KEY_PARTS: dict[str, Any] = {
    "text": "Laura is a DJ.",
    "model_served": "BAAI/bge-base-en-v1.5",
    "side": "document",
    "prompt": None,
    "input_type": None,
    "long_text": "truncate",
    "token_limit": 512,
    "dimension": 768,
    "server_root": "https://api.aimlapi.com/v1",
    "encoding": "float",
}
# One other value for each component: each alone must change the key.
CHANGED: dict[str, Any] = {
    "text": "Laura is a DJ!",
    "model_served": "BAAI/bge-large-en-v1.5",
    "side": "query",
    "prompt": "Represent this sentence for searching relevant passages: ",
    "input_type": "search_document",
    "long_text": "split",
    "token_limit": 256,
    "dimension": 384,
    "server_root": "http://127.0.0.1:8000/v1",
    "encoding": "base64",
}


def vector(seed: float, dim: int = 8) -> list[float]:
    # Values a float32 holds exactly, so equality is exact.
    return [seed + i / 4 for i in range(dim)]


def key(i: int) -> str:
    return cache_key(**{**KEY_PARTS, "text": f"text {i}"})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_stored_vectors_come_back_and_missing_keys_are_left_out(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key(1), vector(1)), (key(2), vector(2))])
        got = cache.get_many([key(1), key(2), key(3)])
        assert got == {key(1): vector(1), key(2): vector(2)}
        assert cache.stats == CacheStats(hits=2, misses=1, writes=2, evictions=0)
        assert len(cache) == 2


def test_vectors_are_float32_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as cache:
        cache.put_many([(key(1), [0.1] * 768)])
        (got,) = cache.get_many([key(1)]).values()
    assert len(got) == 768 and got[0] == pytest.approx(0.1, rel=1e-7) and got[0] != 0.1
    conn = sqlite3.connect(path)
    (blob,) = conn.execute("SELECT vector FROM vectors").fetchone()
    conn.close()
    assert len(blob) == 768 * 4


def test_the_file_holds_neither_texts_nor_the_key_components(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as cache:
        cache.put_many([(cache_key(**KEY_PARTS), vector(1))])
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for part in ("Laura", "bge-base", "aimlapi"):
        assert part.encode() not in data


def test_a_stored_key_is_not_stored_twice(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key(1), vector(1))])
        cache.put_many([(key(1), vector(9)), (key(2), vector(2))])
        assert cache.get_many([key(1)]) == {key(1): vector(1)}
        assert cache.stats.writes == 2 and len(cache) == 2


def test_the_same_components_give_the_same_key() -> None:
    assert cache_key(**KEY_PARTS) == cache_key(**dict(KEY_PARTS))
    assert cache_key(**KEY_PARTS) == cache_key(
        **{**KEY_PARTS, "server_root": "https://api.aimlapi.com/v1/"}
    )
    assert len(cache_key(**KEY_PARTS)) == 64


@pytest.mark.parametrize("component", sorted(CHANGED))
def test_changing_any_one_key_component_is_a_miss(tmp_path: Path, component: str) -> None:
    changed = cache_key(**{**KEY_PARTS, component: CHANGED[component]})
    assert changed != cache_key(**KEY_PARTS)
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(cache_key(**KEY_PARTS), vector(1))])
        assert cache.get_many([changed]) == {}
        assert cache.get_many([cache_key(**KEY_PARTS)]) == {cache_key(**KEY_PARTS): vector(1)}


def test_none_and_empty_components_are_different_keys() -> None:
    assert cache_key(**{**KEY_PARTS, "prompt": None}) != cache_key(**{**KEY_PARTS, "prompt": ""})
    # No concatenation ambiguity: moving text between two components changes the key.
    a = cache_key(**{**KEY_PARTS, "prompt": "ab", "text": "c"})
    b = cache_key(**{**KEY_PARTS, "prompt": "a", "text": "bc"})
    assert a != b


def test_entries_are_bounded_and_the_least_recently_used_go_first(tmp_path: Path) -> None:
    clock = Clock()
    with EmbeddingCache(tmp_path / "c.sqlite", max_entries=3, clock=clock) as cache:
        for i in range(3):
            clock.now += 100
            cache.put_many([(key(i), vector(i))])
        clock.now += 100
        assert key(0) in cache.get_many([key(0)])  # 0 is now more recent than 1 and 2
        clock.now += 100
        cache.put_many([(key(3), vector(3)), (key(4), vector(4))])
        assert len(cache) == 3
        assert set(cache.get_many([key(i) for i in range(5)])) == {key(0), key(3), key(4)}
        assert cache.stats.evictions == 2


def test_a_hit_within_the_touch_resolution_writes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path, clock=clock) as cache:
        cache.put_many([(key(1), vector(1))])
        clock.now += 1
        cache.get_many([key(1)])
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT last_used FROM vectors").fetchone()[0] == clock.now - 1
        clock.now += 3600
        cache.get_many([key(1)])
        assert conn.execute("SELECT last_used FROM vectors").fetchone()[0] == clock.now
        conn.close()


def test_the_bound_holds_over_many_puts(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite", max_entries=50) as cache:
        for batch in range(20):
            cache.put_many([(key(batch * 10 + i), vector(i)) for i in range(10)])
            assert len(cache) <= 50
        assert len(cache) == 50
        conn = sqlite3.connect(cache.path)
        assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 50
        conn.close()


def test_large_requests_are_chunked(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        items = [(key(i), vector(i, 2)) for i in range(2_500)]
        cache.put_many(items)
        assert cache.get_many(k for k, _ in items) == dict(items)


def test_bad_keys_and_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        EmbeddingCache(tmp_path / "c.sqlite", max_entries=0)
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(ValueError, match="not a cache key"):
            cache.get_many(["Laura is a DJ."])
        with pytest.raises(ValueError, match="not a cache key"):
            cache.put_many([("ab" * 31, vector(1))])


def test_closed_cache_refuses_use_and_reopens_by_pickle(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "c.sqlite"  # parent folders are made
    cache = EmbeddingCache(path, max_entries=7)
    cache.put_many([(key(1), vector(1))])
    copy = pickle.loads(pickle.dumps(cache))
    cache.close()
    cache.close()
    with pytest.raises(ValueError, match="closed"):
        cache.get_many([key(1)])
    assert copy.max_entries == 7 and copy.get_many([key(1)]) == {key(1): vector(1)}
    copy.close()


def test_threads_share_one_cache_object_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    shared = EmbeddingCache(path)
    other = EmbeddingCache(path)  # a second connection in the same process
    errors: list[BaseException] = []

    def work(worker: int, cache: EmbeddingCache) -> None:
        try:
            for batch in range(10):
                items = [(key(worker * 1000 + batch * 10 + i), vector(i)) for i in range(10)]
                cache.put_many([*items, (key(999_999), vector(0))])
                got = cache.get_many(k for k, _ in items)
                assert got == dict(items)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(w, shared if w % 2 else other)) for w in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(shared) == 6 * 100 + 1
    shared.close()
    other.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aiml_bge_integrations._cache import EmbeddingCache, cache_key

    path, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    BATCHES = int(sys.argv[4])
    def key(i):
        return cache_key(text=f"text {i}", model_served="m", side="document", prompt=None,
                         input_type=None, long_text="truncate", token_limit=512, dimension=4,
                         server_root="http://x/v1")
    cache = EmbeddingCache(path)
    deadline = time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no start signal")
        time.sleep(0.005)
    for batch in range(BATCHES):
        own = [(key(worker * 10_000 + batch * 5 + i), [float(worker), float(batch), float(i), 0.5])
               for i in range(5)]
        shared = [(key(i), [1.0, 2.0, 3.0, 4.0]) for i in range(batch % 7, batch % 7 + 3)]
        cache.put_many(own + shared)
        assert cache.get_many(k for k, _ in own) == dict(own)
    print(cache.stats.writes)
    """
)


BATCHES = 300  # enough writes that the two processes' transactions meet


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(worker), str(go), str(BATCHES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in (1, 2)
    ]
    try:
        # Both open (and may create) the file before either writes; then they start together.
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    writes = sum(int(out) for out, _ in outs)
    own_keys = 2 * BATCHES * 5
    shared_keys = 6 + 3  # key(0) .. key(8)
    with EmbeddingCache(path) as cache:
        assert len(cache) == own_keys + shared_keys == writes
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(cache)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"my precious notes, not a database\n" * 200)
    before = snapshot(path)
    with pytest.raises(CacheFileError, match="not an aiml-bge embedding cache"):
        EmbeddingCache(path)
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('laura')")
    conn.commit()
    conn.close()
    before = snapshot(path)
    with pytest.raises(CacheFileError, match="another program"):
        EmbeddingCache(path)
    assert snapshot(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()


def test_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CacheFileError, match="newer"):
        EmbeddingCache(path)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CacheFileError, match="folder"):
        EmbeddingCache(tmp_path)


def test_the_file_is_marked_as_this_packages_cache(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()
    with EmbeddingCache(path) as again:  # reopening its own file is fine
        assert len(again) == 0


@pytest.mark.skipif(
    sys.platform != "linux", reason="fork is the default start method on Linux only"
)
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    import multiprocessing

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many([(key(1), vector(1))])
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()

    def child() -> None:
        cache.put_many([(key(2), vector(2))])
        result.put(sorted(cache.get_many([key(1), key(2)])))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        got = result.get(timeout=60)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    assert got == sorted([key(1), key(2)])
    assert cache.get_many([key(2)]) == {key(2): vector(2)}  # the parent's connection still works
    cache.close()


@pytest.mark.parametrize(
    "module",
    [
        "aiml_bge_integrations._cache",
        "aiml_bge_integrations._deprecations",
        "aiml_bge_integrations._telemetry",
    ],
)
def test_every_exported_name_exists_and_is_documented(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    assert mod.__doc__
    for name in mod.__all__:
        obj = getattr(mod, name)
        if callable(obj) and not name.isupper():
            assert obj.__doc__, f"{module}.{name} has no docstring"


def test_a_batch_sends_each_missing_text_once_and_fills_every_position(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key(1), vector(1))])
        keys = [key(2), key(1), key(3), key(2), key(1), key(2)]
        batch = lookup_batch(cache, keys)
        assert batch.to_send == (0, 2)  # key(2) once, key(3) once
        assert (batch.hits, batch.misses) == (2, 4)
        sent = [vector(2), vector(3)]
        assert batch.complete(sent) == [
            vector(2),
            vector(1),
            vector(3),
            vector(2),
            vector(1),
            vector(2),
        ]
        cache.put_many(batch.new_items(sent))
        again = lookup_batch(cache, keys)
        assert again.to_send == () and again.complete([]) == batch.complete(sent)
        with pytest.raises(ValueError, match="expected 2 vectors"):
            batch.complete([vector(2)])


def test_without_a_cache_identical_texts_are_still_sent_once() -> None:
    batch = lookup_batch(None, [key(1), key(1), key(2)])
    assert batch.to_send == (0, 2) and batch.hits == 0
    assert batch.complete([vector(1), vector(2)]) == [vector(1), vector(1), vector(2)]


async def test_async_lookups_and_writes(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        await cache.aput_many([(key(1), vector(1))])
        batch = await alookup_batch(cache, [key(1), key(2)])
        assert batch.to_send == (1,) and batch.found == {key(1): vector(1)}
        assert await cache.aget_many(k for k in [key(1)]) == {key(1): vector(1)}
