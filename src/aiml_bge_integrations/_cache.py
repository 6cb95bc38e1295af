"""An embedding cache on disk: a vector once paid for is never paid for again.

Why SQLite, from the standard library: it is on every Python, needs no server, and gives what
a cache shared by several processes and threads needs without code of our own: atomic
transactions, a write-ahead log (readers never wait for the one writer), a busy timeout
(writers from other processes queue instead of failing) and crash safety (a killed process
leaves the file consistent). A key-value store such as LMDB or RocksDB would be an extra
binary dependency for no gain at the sizes a cache of embeddings reaches; files per vector
(LangChain's ``LocalFileStore``) leave eviction and atomicity to the caller.

What is stored: for each entry, the 32-byte SHA-256 of everything that changes a vector
(:func:`cache_key`), the vector as little-endian float32 (3 KiB for 768 dimensions) and when
it was last used. Neither the texts nor the API key are ever written: a key is a one-way hash,
and the key components do not include the API key.

Bounds and eviction: at most ``max_entries`` entries. Each :meth:`EmbeddingCache.put_many`
that would pass the bound first removes the least recently used entries (by ``last_used``,
set on every write and, to a resolution of :data:`TOUCH_RESOLUTION` seconds, on every hit),
inside the same transaction, so the bound holds at every commit whatever the number of
writers.

A file that is not this cache (not SQLite, another program's database, a newer layout) is
refused with :class:`CacheFileError` and left exactly as it was: the cache writes only files
it created or recognises as its own, and deletes no file.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import sqlite3
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigurationError

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_MAX_ENTRIES",
    "SCHEMA_VERSION",
    "TOUCH_RESOLUTION",
    "CacheFileError",
    "CacheStats",
    "CachedBatch",
    "EmbeddingCache",
    "alookup_batch",
    "cache_key",
    "count_held",
    "lookup_batch",
]

APPLICATION_ID = 0x41424745  # "ABGE"
"""SQLite ``application_id`` that marks a file as this package's embedding cache."""
SCHEMA_VERSION = 1
"""The cache's table layout (SQLite ``user_version``); a file with a newer one is refused."""
DEFAULT_MAX_ENTRIES = 1_000_000
"""Default bound on entries: about 3 GiB of 768-dimension vectors."""
TOUCH_RESOLUTION = 60.0
"""Seconds within which a hit does not write its entry's ``last_used`` again.

Recency is kept to the minute, so that reading hot entries over and over costs no writes
(and no write lock shared with the other processes).
"""
BUSY_TIMEOUT = 30.0
"""Seconds a write waits for another process's transaction before failing."""

_KEY_SCHEME = "aiml-bge-cache/1"
_CHUNK = 500  # keys per statement: well under SQLite's smallest limit on bound parameters

# A rowid table with a unique key, not WITHOUT ROWID: a 3 KiB vector is far above the row
# size WITHOUT ROWID suits (benchmarks/bench_cache.py: rowid storage more than halves the CPU
# of a write and of a hit, and cuts that of a miss tenfold).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_by_last_used ON vectors (last_used);
CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counts (name, value) VALUES ('entries', 0);
"""


class CacheFileError(ConfigurationError):
    """The cache path holds something that is not this package's cache; it was left untouched."""


def cache_key(
    *,
    text: str,
    model_served: str,
    side: str,
    prompt: str | None,
    input_type: str | None,
    long_text: str,
    token_limit: int | None,
    dimension: int | None,
    server_root: str,
    encoding: str | None = None,
) -> str:
    """The cache key of one text: the SHA-256 (hex) of everything that changes its vector.

    ``model_served`` is the model the server says it runs (a reply's ``model``), ``side``
    "query" or "document", ``prompt`` the instruction put in front of the text on that side
    (or ``None``), ``input_type`` the side's input type where the server takes one,
    ``long_text`` and ``token_limit`` the long-text policy and its limit, ``dimension`` the
    dimension asked for (``None`` when the request leaves it to the server), ``server_root``
    the base URL requests go to (a trailing slash is ignored), ``encoding`` the
    ``encoding_format`` asked for, where it changes the numbers returned.
    The components are hashed as one JSON array, so no two different sets share a key.
    """
    components = [
        _KEY_SCHEME,
        text,
        model_served,
        side,
        prompt,
        input_type,
        long_text,
        token_limit,
        dimension,
        server_root.rstrip("/"),
        encoding,
    ]
    return hashlib.sha256(orjson.dumps(components)).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    """What one :class:`EmbeddingCache` object did since it was opened."""

    hits: int = 0
    """Distinct keys asked for that were found (per ``get_many``)."""
    misses: int = 0
    """Distinct keys asked for that were not."""
    writes: int = 0
    """New entries stored (a key already there is not stored again)."""
    evictions: int = 0
    """Entries this object removed to keep the bound."""


@functools.lru_cache(maxsize=16)
def _layout(dimension: int) -> struct.Struct:
    # Little-endian float32 whatever the machine (struct is also twice as fast as array here).
    return struct.Struct(f"<{dimension}f")


def _to_blob(vector: Sequence[float]) -> bytes:
    return _layout(len(vector)).pack(*vector)


def _from_blob(blob: bytes) -> list[float]:
    return list(_layout(len(blob) // 4).unpack(blob))


def _key_bytes(key: str) -> bytes:
    try:
        raw = bytes.fromhex(key)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"not a cache key (64 hex digits from cache_key): {key!r}")
    return raw


def _refuse(path: Path, why: str) -> CacheFileError:
    return CacheFileError(
        f"{path} is not an aiml-bge embedding cache ({why}); it was left untouched. "
        "Point the cache setting at a new file."
    )


def _check_own(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version (0 for an empty new file); raises for any other file."""
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if application_id == 0 and version == 0 and not tables:
        return 0
    if application_id != APPLICATION_ID:
        raise _refuse(path, "another program's SQLite database")
    if version > SCHEMA_VERSION:
        raise _refuse(path, f"layout {version}, newer than this version's {SCHEMA_VERSION}")
    if version < 1 or "vectors" not in tables:
        raise _refuse(path, "its tables are missing")
    return int(version)


class EmbeddingCache:
    """Vectors by :func:`cache_key`, in one SQLite file shared by processes and threads.

    ``path`` is created (with its parent folders) if it does not exist. Vectors come back as
    lists of floats equal to what was stored to float32 precision (about 7 significant digits,
    the precision embedding models compute in). Thread-safe; after a ``fork`` the child opens
    its own connection; pickling carries the path and settings, not the connection.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        busy_timeout: float = BUSY_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        if busy_timeout <= 0:
            raise ConfigurationError(f"busy_timeout must be > 0 seconds, got {busy_timeout!r}")
        self.path = Path(path)
        self.max_entries = max_entries
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._hits = self._misses = self._writes = self._evictions = 0
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = self._open()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, max_entries={self.max_entries})"

    def __reduce__(self) -> Any:
        return (_reopen, (str(self.path), self.max_entries, self.busy_timeout))

    # -- opening -------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise _refuse(self.path, "it is a folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            # Look before writing anything: even switching to WAL would rewrite a stranger's file.
            _check_own(conn, self.path)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL keeps the file consistent through a crash; a lost last
            # transaction only costs a vector fetched again.
            conn.execute("PRAGMA synchronous = NORMAL")
            with _transaction(conn):
                if _check_own(conn, self.path) == 0:  # new: no other process made the tables first
                    self._create(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _refuse(self.path, f"SQLite says: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("the embedding cache is closed")
        if self._pid != os.getpid():
            # A connection must not cross a fork: the child opens its own.
            self._pid = os.getpid()
            self._conn = self._open()
        return self._conn

    # -- use -----------------------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, list[float]]:
        """The stored vectors of those keys that are in the cache (missing keys are left out)."""
        wanted = {_key_bytes(k): k for k in keys}
        found: dict[str, list[float]] = {}
        if not wanted:
            return found
        raw = list(wanted)
        with self._lock:
            conn = self._connection()
            now = self._clock()
            stale: list[bytes] = []
            for start in range(0, len(raw), _CHUNK):
                chunk = raw[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, vector, last_used FROM vectors WHERE key IN ({marks})", chunk
                )
                for key, blob, last_used in rows:
                    found[wanted[key]] = _from_blob(blob)
                    if last_used < now - TOUCH_RESOLUTION:
                        stale.append(key)
            if stale:
                with _transaction(conn):
                    conn.executemany(
                        "UPDATE vectors SET last_used = ? WHERE key = ?", ((now, k) for k in stale)
                    )
            self._hits += len(found)
            self._misses += len(wanted) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, Sequence[float]]]) -> None:
        """Store vectors by key, then evict the least recently used past ``max_entries``.

        A key already stored keeps its vector (the same key means the same inputs) and is
        marked as used now.
        """
        rows = [(_key_bytes(k), _to_blob(v)) for k, v in items]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            now = self._clock()
            with _transaction(conn):
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO vectors (key, vector, last_used) VALUES (?, ?, ?)",
                    ((k, blob, now) for k, blob in rows),
                )
                added = conn.total_changes - before
                if added < len(rows):
                    conn.executemany(
                        "UPDATE vectors SET last_used = ? WHERE key = ? AND last_used < ?",
                        ((now, k, now) for k, _ in rows),
                    )
                conn.execute("UPDATE counts SET value = value + ? WHERE name = 'entries'", (added,))
                entries = conn.execute(
                    "SELECT value FROM counts WHERE name = 'entries'"
                ).fetchone()[0]
                evicted = 0
                if entries > self.max_entries:
                    over = entries - self.max_entries
                    evicted = conn.execute(
                        "DELETE FROM vectors WHERE id IN "
                        "(SELECT id FROM vectors ORDER BY last_used LIMIT ?)",
                        (over,),
                    ).rowcount
                    conn.execute(
                        "UPDATE counts SET value = value - ? WHERE name = 'entries'", (evicted,)
                    )
            self._writes += added
            self._evictions += evicted

    async def aget_many(self, keys: Iterable[str]) -> dict[str, list[float]]:
        """:meth:`get_many` in a worker thread, so that the event loop never waits on the disk."""
        keys = list(keys)
        return await asyncio.to_thread(self.get_many, keys)

    async def aput_many(self, items: Iterable[tuple[str, Sequence[float]]]) -> None:
        """:meth:`put_many` in a worker thread."""
        items = list(items)
        await asyncio.to_thread(self.put_many, items)

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, writes and evictions of this object so far."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._writes, self._evictions)

    def __len__(self) -> int:
        """Entries in the file now (all processes' writes included)."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT value FROM counts WHERE name = 'entries'")
                .fetchone()
            )
        return int(row[0])

    def close(self) -> None:
        """Close the connection (idempotent); the file stays."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CachedBatch:
    """One call's texts split into what the cache answered and what must be sent.

    Texts with the same key are sent once: the first of them stands for the others, which
    get the same vector.
    """

    keys: tuple[str, ...]
    """The cache key of each text, in the caller's order."""
    found: dict[str, list[float]]
    """Vectors the cache held, by key."""
    to_send: tuple[int, ...]
    """Positions of the texts to send: the first text of each key the cache did not hold."""

    @property
    def hits(self) -> int:
        """Texts answered by the cache (every copy of a held text counts)."""
        return sum(1 for k in self.keys if k in self.found)

    @property
    def misses(self) -> int:
        """Texts not answered by the cache (every copy counts; only ``to_send`` are sent)."""
        return len(self.keys) - self.hits

    def new_items(self, sent: Sequence[list[float]]) -> list[tuple[str, list[float]]]:
        """The (key, vector) pairs to store, given the vectors of ``to_send`` in that order."""
        if len(sent) != len(self.to_send):
            raise ValueError(f"expected {len(self.to_send)} vectors, got {len(sent)}")
        return [(self.keys[i], v) for i, v in zip(self.to_send, sent, strict=True)]

    def complete(self, sent: Sequence[list[float]]) -> list[list[float]]:
        """Every text's vector in the caller's order, given the vectors of ``to_send``."""
        by_key = dict(self.found)
        by_key.update(self.new_items(sent))
        return [by_key[k] for k in self.keys]


def lookup_batch(cache: EmbeddingCache | None, keys: Sequence[str]) -> CachedBatch:
    """Split a call by its texts' keys: held by ``cache`` (``None``: no cache), or to send once."""
    found = cache.get_many(keys) if cache is not None else {}
    return _batch(keys, found)


def _batch(keys: Sequence[str], found: dict[str, list[float]]) -> CachedBatch:
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in found:
            first.setdefault(k, i)
    return CachedBatch(tuple(keys), found, tuple(first.values()))


async def alookup_batch(cache: EmbeddingCache | None, keys: Sequence[str]) -> CachedBatch:
    """:func:`lookup_batch` for async callers (the lookup runs in a worker thread)."""
    found = await cache.aget_many(keys) if cache is not None else {}
    return _batch(keys, found)


def count_held(path: str | os.PathLike[str], keys: Iterable[str]) -> int:
    """How many of the distinct ``keys`` the cache file at ``path`` holds, read-only.

    The file is opened read-only (SQLite ``mode=ro``): no entry is added, evicted or marked as
    used, so looking is free of side effects on what the cache keeps. A path with no file yet
    holds nothing (0). A file that is not this package's cache raises ``CacheFileError``.
    """
    target = Path(path)
    wanted = list({_key_bytes(k) for k in keys})
    if not target.exists():
        return 0
    if target.is_dir():
        raise _refuse(target, "it is a folder")
    uri = "file:" + urllib.parse.quote(str(target.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise _refuse(target, f"SQLite says: {exc}") from None
    try:
        if _check_own(conn, target) == 0:
            return 0
        held = 0
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            row = conn.execute(
                f"SELECT COUNT(*) FROM vectors WHERE key IN ({marks})", chunk
            ).fetchone()
            held += int(row[0])
        return held
    except sqlite3.DatabaseError as exc:
        raise _refuse(target, f"SQLite says: {exc}") from None
    finally:
        conn.close()


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock at once (waiting up to the busy timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _reopen(path: str, max_entries: int, busy_timeout: float) -> EmbeddingCache:
    return EmbeddingCache(path, max_entries=max_entries, busy_timeout=busy_timeout)
