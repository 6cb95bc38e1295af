"""Ray Data: embed a dataset on a Ray cluster, with limits that hold for the whole cluster.

Needs the ``ray`` extra (``pip install 'aiml-bge-integrations[ray]'``: ``ray[data]`` 2.51 or
newer)::

    import ray
    from aiml_bge_integrations.ray import embed_dataset

    ds = ray.data.read_parquet("s3://bucket/passages/")          # columns id, text, ...
    out = embed_dataset(ds, actors=4, max_concurrency=16, base_url=...)
    out.write_parquet("s3://bucket/vectors/")                     # id, text, ..., embedding

- ``BgeEmbedder`` is the callable class ``Dataset.map_batches`` runs in each actor: it builds
  one ``AsyncEmbeddingsClient`` per actor, takes Arrow batches, and appends the vectors as an
  Arrow ``fixed_size_list<float32>[dim]`` column (the type ``aiml-bge embed`` writes to
  Parquet), every other column kept.
- ``embed_dataset`` is the one call most users need: it splits the limits, sizes the actor
  pool, gives each actor a fraction of a CPU, and cuts the data into blocks small enough that
  every actor has work.
- ``embed_parquet`` reads Parquet, embeds, and writes each block as a Parquet file from the
  actor that embedded it; run again after a failure, it embeds only the ids not yet written.

**Limits for the whole cluster.** ``max_concurrency``, ``requests_per_minute`` and
``tokens_per_minute`` given to ``embed_dataset`` hold for all actors together: each of the
``actors`` actors gets an equal share (``split_limits``) and its client enforces that share
locally. The shares add up to at most the limit, so the cluster never exceeds it, without a
coordinator on the request path.

**The API key** never goes through Ray: no task argument, actor argument or object carries
it. Each actor reads it from an environment variable of the worker process (by default
``AIMLAPI_API_KEY``; ``api_key_env`` names another), which the cluster's nodes set from a
secret (see docs/ray.md, "How the key reaches the workers").
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    import ray
    import ray.data
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiml_bge_integrations.ray needs Ray Data: pip install 'aiml-bge-integrations[ray]'"
    ) from err

from ._models import missing_key_message
from ._settings import (
    API_KEY_ENV,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    env_default,
    expected_dimension,
    resolve_settings,
)
from .client import AsyncEmbeddingsClient, EmbeddingsClient
from .errors import ConfigurationError, InvalidInputError, MissingAPIKeyError

__all__ = [
    "ActorShare",
    "BgeEmbedder",
    "ParquetRun",
    "SyncBgeEmbedder",
    "embed_dataset",
    "embed_parquet",
    "split_limits",
]

DEFAULT_ACTORS = 2
"""Actors ``embed_dataset`` starts when not told."""
SERVED_MODEL_METADATA = b"aiml_bge.model_served"
"""Key of the Parquet schema metadata ``embed_parquet`` writes in each part file: the model
the server named in its replies (what the job's manifest reports as ``model_served``)."""
DEFAULT_ACTOR_CPUS = 0.25
"""CPU share reserved per actor: an actor mostly waits on the network."""

_REFUSED_SETTINGS = {
    "api_key": "the key would travel in Ray's task arguments; set it in the workers' "
    "environment (AIMLAPI_API_KEY, or name the variable with api_key_env)",
    "http_client": "an HTTP client cannot be shipped to actors; each actor builds its own",
    "rate_limiter": "a limiter object is per process; give requests_per_minute and "
    "tokens_per_minute, which embed_dataset shares between the actors",
}


# -- limits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorShare:
    """What one actor's client may use so that all ``actors`` together stay within the limits."""

    actors: int
    """Actors to start (fewer than asked when the concurrency cannot give each one a slot)."""
    max_concurrency: int
    """Requests in flight for this actor's client."""
    requests_per_minute: float | None
    """This actor's pace, or ``None`` for no pace."""
    tokens_per_minute: float | None
    """This actor's token pace, or ``None``."""


def split_limits(
    actors: int,
    max_concurrency: int,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
) -> ActorShare:
    """Split cluster-wide limits into equal per-actor shares whose sum never exceeds them.

    Concurrency is split by floor division (``actors * share <= max_concurrency``); when there
    are more actors than slots, the number of actors drops to ``max_concurrency`` (one slot
    each). Per-minute limits are divided evenly: each actor's client paces its requests
    evenly at its share, so the sum of the paces is the limit.
    """
    for name, value in (("actors", actors), ("max_concurrency", max_concurrency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an integer >= 1, not {value!r}")
    for name, rate in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
    ):
        if rate is not None and not rate > 0:
            raise ConfigurationError(f"{name} must be positive, not {rate!r}")
    n = min(actors, max_concurrency)
    return ActorShare(
        actors=n,
        max_concurrency=max_concurrency // n,
        requests_per_minute=None if requests_per_minute is None else requests_per_minute / n,
        tokens_per_minute=None if tokens_per_minute is None else tokens_per_minute / n,
    )


# -- the map_batches class ------------------------------------------------------------------


def _check_settings(settings: Mapping[str, Any]) -> None:
    for name, why in _REFUSED_SETTINGS.items():
        if name in settings:
            raise ConfigurationError(f"{name} is not accepted on Ray: {why}")


def _key_from_env(api_key_env: str, base_url: str | None) -> str:
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise MissingAPIKeyError(
            missing_key_message(
                f"set {api_key_env} in the environment of every node of this Ray job (or the "
                "job's runtime environment; see docs/ray.md)",
                base_url or env_default("base_url"),
            )
        )
    return key


class _EmbedderBase:
    _client_class: type[AsyncEmbeddingsClient] | type[EmbeddingsClient]

    def __init__(
        self,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        api_key_env: str = API_KEY_ENV,
        **settings: Any,
    ) -> None:
        _check_settings(settings)
        self._client: Any = self._client_class(
            api_key=_key_from_env(api_key_env, settings.get("base_url")), **settings
        )
        self.text_column = text_column
        """Column holding the texts."""
        self.output_column = output_column
        """Column the vectors are written to."""
        self._dim: int | None = expected_dimension(self._client.model)

    def _texts(self, batch: pa.Table) -> list[str]:
        if self.text_column not in batch.column_names:
            raise InvalidInputError(
                f"no column {self.text_column!r} in the batch (columns: "
                f"{', '.join(batch.column_names)}); choose one with text_column="
            )
        if self.output_column in batch.column_names:
            raise InvalidInputError(
                f"the batch already has a column {self.output_column!r}; choose another "
                "output_column="
            )
        texts: list[str] = batch.column(self.text_column).to_pylist()
        return texts

    def _append(self, batch: pa.Table, vectors: list[list[float]]) -> Any:
        if vectors:
            matrix = np.asarray(vectors, dtype=np.float32)
            self._dim = matrix.shape[1]
        else:
            # An empty block: the model's known width, or the one seen so far, so that every
            # block has the same schema.
            self._dim = self._dim or 0
            matrix = np.zeros((0, self._dim), dtype=np.float32)
        values = pa.array(matrix.reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(values, self._dim)
        return batch.append_column(self.output_column, column)


class BgeEmbedder(_EmbedderBase):
    """A callable class for ``Dataset.map_batches``: appends a vector column to Arrow batches.

    Usage::

        ds.map_batches(
            BgeEmbedder,
            fn_constructor_kwargs={"text_column": "text", "max_concurrency": 4},
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.25,
        )

    Each actor builds one ``AsyncEmbeddingsClient`` from the keyword ``settings`` (those of
    the client; ``api_key``, ``http_client`` and ``rate_limiter`` are refused) and a key read
    from the worker's environment variable ``api_key_env``. ``__call__`` is ``async``: Ray
    Data runs several blocks of one actor at once on one event loop, and the client's
    ``max_concurrency`` holds across all of them, so a block's slowest request does not leave
    the actor's other slots idle. Sync and async measured equal within noise (see
    docs/ray.md). Prefer ``embed_dataset``, which also splits cluster-wide limits.
    """

    _client_class = AsyncEmbeddingsClient
    _client: AsyncEmbeddingsClient

    async def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the vectors of its texts appended as ``output_column``."""
        texts = self._texts(batch)
        vectors = await self._client.embed_documents(texts) if texts else []
        return self._append(batch, vectors)


class SyncBgeEmbedder(_EmbedderBase):
    """``BgeEmbedder`` with a synchronous ``__call__`` over ``EmbeddingsClient`` (threads).

    One batch at a time per actor; the requests of a batch run on up to ``max_concurrency``
    threads. Kept for comparison (see docs/ray.md) and for pipelines that cannot run async
    functions; ``BgeEmbedder`` is the default.
    """

    _client_class = EmbeddingsClient
    _client: EmbeddingsClient

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the vectors of its texts appended as ``output_column``."""
        texts = self._texts(batch)
        vectors = self._client.embed_documents(texts) if texts else []
        return self._append(batch, vectors)


# -- the one call ---------------------------------------------------------------------------


def _checked_client_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    # Every check of the core, once, on the driver, before an actor starts: the settings the
    # actors' clients get are these checked values (the model, long_text and the rest from
    # the driver's environment where the user set them there). The key is never among them.
    checked = resolve_settings(settings)
    checked.pop("api_key", None)
    return checked


@dataclass(frozen=True)
class _Plan:
    # What every actor of a job is built from, checked on the driver before any actor starts.
    actors: int
    num_cpus: float
    rows_per_block: int
    constructor: dict[str, Any]
    """The map class's keyword arguments: the columns, api_key_env and the client settings."""


def _plan(
    *,
    text_column: str = "text",
    output_column: str = "embedding",
    actors: int = DEFAULT_ACTORS,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_cpus: float = DEFAULT_ACTOR_CPUS,
    rows_per_block: int | None = None,
    api_key_env: str = API_KEY_ENV,
    **settings: Any,
) -> _Plan:
    _check_settings(settings)
    # Checked once, as the clients check them (the cluster-wide limits too), then split.
    checked = _checked_client_settings(
        {
            **settings,
            "batch_size": batch_size,
            "max_concurrency": max_concurrency,
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
        }
    )
    share = split_limits(
        actors,
        checked["max_concurrency"],
        checked["requests_per_minute"],
        checked["tokens_per_minute"],
    )
    client_settings: dict[str, Any] = {
        **checked,
        "max_concurrency": share.max_concurrency,
        "requests_per_minute": share.requests_per_minute,
        "tokens_per_minute": share.tokens_per_minute,
    }
    if not num_cpus > 0:
        raise ConfigurationError(f"num_cpus must be positive, not {num_cpus!r}")
    rows = rows_per_block or 2 * checked["batch_size"] * share.max_concurrency
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigurationError(f"rows_per_block must be an integer >= 1, not {rows!r}")
    constructor = {
        "text_column": text_column,
        "output_column": output_column,
        "api_key_env": api_key_env,
        **client_settings,
    }
    return _Plan(share.actors, num_cpus, rows, constructor)


def _map(
    ds: ray.data.Dataset,
    plan: _Plan,
    map_class: type[_EmbedderBase],
    *,
    extra: Mapping[str, Any] | None = None,
    tasks_per_actor: int | None = None,
    calls_per_actor: int | None = None,
) -> ray.data.Dataset:
    # Blocks cut (streaming, no shuffle) to the plan's size, on a pool of the plan's actors.
    # ``tasks_per_actor`` None is Ray Data's default of blocks handed to an actor at once;
    # ``calls_per_actor`` is how many of those run at once (Ray Data's default: one task at
    # a time, its async batches run together), where this Ray Data can be told.
    strategy: dict[str, Any] = {
        "size": plan.actors,
        "max_tasks_in_flight_per_actor": tasks_per_actor,
    }
    if calls_per_actor is not None and _ACTOR_CALLS_SETTABLE:
        strategy["max_concurrent_calls_per_actor"] = calls_per_actor
    return ds.repartition(target_num_rows_per_block=plan.rows_per_block).map_batches(
        map_class,
        fn_constructor_kwargs={**plan.constructor, **(extra or {})},
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(**strategy),
        num_cpus=plan.num_cpus,
    )


_ACTOR_CALLS_SETTABLE = (
    "max_concurrent_calls_per_actor" in inspect.signature(ray.data.ActorPoolStrategy).parameters
)
"""Whether this Ray Data lets a pool run several tasks of one actor at once (Ray 2.5x on)."""


def embed_dataset(
    ds: ray.data.Dataset,
    *,
    text_column: str = "text",
    output_column: str = "embedding",
    actors: int = DEFAULT_ACTORS,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_cpus: float = DEFAULT_ACTOR_CPUS,
    rows_per_block: int | None = None,
    api_key_env: str = API_KEY_ENV,
    embedder: type[_EmbedderBase] | None = None,
    **settings: Any,
) -> ray.data.Dataset:
    """``ds`` with a column of vectors appended (lazily, as Ray Data does everything).

    ``max_concurrency``, ``requests_per_minute`` and ``tokens_per_minute`` are limits for the
    whole cluster, split between the ``actors`` (``split_limits``): give the server's limits
    here, not per actor. ``batch_size`` is inputs per request; other keyword ``settings`` go
    to each actor's client as they are (``base_url``, ``model``, ``max_retries``,
    ``long_text``...). ``num_cpus`` is the CPU share reserved per actor (default a quarter:
    an actor waits on the network). Blocks are cut (streaming, no shuffle) to at most
    ``rows_per_block`` rows, by default enough for two rounds of the actor's requests, so
    that every actor has work even when the input has few large files. ``embedder`` picks
    the map class (default ``BgeEmbedder``). The key is read by each actor from its
    environment variable ``api_key_env``.

    Raises ``ConfigurationError`` at once for bad settings, before any actor starts.
    """
    plan = _plan(
        text_column=text_column,
        output_column=output_column,
        actors=actors,
        max_concurrency=max_concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        batch_size=batch_size,
        num_cpus=num_cpus,
        rows_per_block=rows_per_block,
        api_key_env=api_key_env,
        **settings,
    )
    return _map(ds, plan, embedder or BgeEmbedder)


# -- resumable Parquet: each block embedded and written by the same actor task ----------------

_BLOCKS_IN_FLIGHT = 2
"""Blocks each ``embed_parquet`` actor holds at once, each of ``rows_per_block / 2`` rows."""
_PART_PREFIX = "part-"
_PART_SUFFIX = ".parquet"
_TEMP_PREFIX = ".writing-"


@dataclass(frozen=True)
class ParquetRun:
    """What one ``embed_parquet`` run did."""

    embedded: int
    """Rows embedded and written by this run."""
    already_written: int
    """Rows found in the output directory at the start (written by earlier runs), skipped."""


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    # A URI (s3://, gs://, ...) or a local path, made absolute on the driver so that every
    # actor writes to the same directory whatever its working directory.
    if "://" not in path:
        path = os.path.abspath(path)
    fs, root = pafs.FileSystem.from_uri(path)
    return fs, root.rstrip("/")


def _is_part_file(name: str, *, finished: bool = False) -> bool:
    # A file embed_parquet writes (a part, or with ``finished`` False, a part being written).
    if not name.endswith(_PART_SUFFIX):
        return False
    return name.startswith(_PART_PREFIX) or (not finished and name.startswith(_TEMP_PREFIX))


def _part_name(ids: pa.ChunkedArray | pa.Array) -> str:
    # Named by the ids it holds: a block written again (a task retried after its actor died)
    # replaces its own file instead of adding a second copy of its rows.
    digest = hashlib.sha256()
    for value in ids.to_pylist():
        digest.update(repr(value).encode())
        digest.update(b"\x00")
    return f"{_PART_PREFIX}{digest.hexdigest()[:32]}{_PART_SUFFIX}"


class _BlockWriter(BgeEmbedder):
    # embed_parquet's map class: embeds a block, writes it as one Parquet file (to a hidden
    # name, then moved into place, so a file under its final name is always whole), and
    # returns only its row count. The vectors never pass through Ray's object store.

    def __init__(self, *, output_path: str, id_column: str, **options: Any) -> None:
        super().__init__(**options)
        self._fs, self._dir = _filesystem(output_path)
        self._id_column = id_column

    async def __call__(self, batch: pa.Table) -> pa.Table:
        table = await super().__call__(batch)
        if table.num_rows:
            await asyncio.to_thread(self._write, table)
        return pa.table({"rows": pa.array([table.num_rows], type=pa.int64())})

    def _write(self, table: pa.Table) -> None:
        served = self._client.served_model
        if served is not None:
            # Which model made these vectors, as the server named it: the job's manifest says.
            metadata = dict(table.schema.metadata or {})
            metadata[SERVED_MODEL_METADATA] = served.encode("utf-8")
            table = table.replace_schema_metadata(metadata)
        name = _part_name(table.column(self._id_column))
        final = f"{self._dir}/{name}"
        temp = f"{self._dir}/{_TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
        with self._fs.open_output_stream(temp) as sink:
            pq.write_table(table, sink)
        self._fs.move(temp, final)


def _written_ids(fs: pafs.FileSystem, directory: str, id_column: str) -> pa.Array | None:
    """The ids of the part files in ``directory`` (``None`` when there are none).

    Removes what a killed run left half-written (hidden temporary files). Raises
    ``InvalidInputError`` when an id is written twice: the ids were not unique.
    """
    fs.create_dir(directory, recursive=True)
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    parts: list[str] = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        if not _is_part_file(info.base_name):
            continue
        if _is_part_file(info.base_name, finished=True):
            parts.append(info.path)
        else:
            fs.delete_file(info.path)
    if not parts:
        return None
    ids = pq.ParquetDataset(parts, filesystem=fs).read(columns=[id_column]).column(id_column)
    written = ids.combine_chunks()
    if pc.count_distinct(written).as_py() != len(written):
        raise InvalidInputError(
            f"{directory} holds some {id_column!r} more than once: the ids of the input must "
            "be unique for a run to be resumed by id"
        )
    return written


def _drop_written(batch: pa.Table, *, id_column: str, written: list[Any]) -> pa.Table:
    # ``written`` is ``[ObjectRef]``: a list, so that Ray hands the reference over instead of
    # resolving it for every task's arguments.
    ids: pa.Array = ray.get(written[0])
    column = batch.column(id_column)
    if ids.type != column.type:
        ids = ids.cast(column.type)
    return batch.filter(pc.invert(pc.is_in(column, value_set=ids)))


def _read_parquet(path: str | list[str]) -> ray.data.Dataset:
    # Ray Data's first Parquet reader. The newer one (DataContext.use_datasource_v2, on by
    # default since Ray 2.5x) reads the files' footers in tasks started from its listing
    # task, each in a new worker process: 15-18 s before the first row on a 2-core node,
    # against about 1 s (docs/ray.md). The plan is fixed when the read is called.
    context = ray.data.DataContext.get_current()
    if not hasattr(context, "use_datasource_v2"):
        return ray.data.read_parquet(path)
    saved = context.use_datasource_v2
    context.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(path)
    finally:
        context.use_datasource_v2 = saved


def embed_parquet(
    input_path: str | list[str],
    output_path: str,
    *,
    id_column: str = "id",
    **options: Any,
) -> ParquetRun:
    """Read Parquet, embed (``embed_dataset``'s ``options``), write Parquet; resumable by id.

    Each block is embedded and written, as one Parquet file in ``output_path``, by the same
    actor task. Each actor holds two blocks at a time, of half ``rows_per_block`` each, so
    that the next block's requests fill the slots a block's last requests and its write leave
    idle: a failure or a killed driver loses at most ``rows_per_block`` rows per actor. Run
    again, it reads the ids already in ``output_path`` and embeds only the others, so each id
    is written once. The output directory is the checkpoint: there is nothing else to keep.

    Conditions: ``id_column`` holds unique ids that never change between runs; ``output_path``
    is on storage every node sees (object storage, or a shared file system; a local path on a
    single node). ``embedder`` is not accepted (blocks are embedded by ``BgeEmbedder``).

    For a local ``output_path``, the run holds the lock of ``<output_path>.partial/`` (the one
    ``aiml-bge embed`` takes) before it reads or removes anything in the output, so a second
    run of the same output raises ``OutputBusyError``; paths through a symbolic link are
    refused. Object storage has no such lock: run one job per output there.
    """
    if "://" in output_path:
        return _embed_parquet(input_path, output_path, id_column=id_column, **options)
    from pathlib import Path

    from ._job.checkpoint import Checkpoint, work_dir_for
    from ._job.files import refuse_link

    output = Path(os.path.abspath(output_path))
    refuse_link(output)
    checkpoint = Checkpoint(work_dir_for(output), output, [])
    try:
        return _embed_parquet(input_path, str(output), id_column=id_column, **options)
    finally:
        checkpoint.remove()
        checkpoint.release()


def _embed_parquet(
    input_path: str | list[str],
    output_path: str,
    *,
    id_column: str = "id",
    **options: Any,
) -> ParquetRun:
    """``embed_parquet`` without the lock (its caller holds it)."""

    if "embedder" in options:
        raise ConfigurationError("embedder is not accepted by embed_parquet (BgeEmbedder embeds)")
    plan = _plan(**options)
    text_column = plan.constructor["text_column"]
    ds = _read_parquet(input_path)
    columns = ds.schema().names
    missing = [name for name in (id_column, text_column) if name not in columns]
    if missing:
        raise InvalidInputError(
            f"no column {missing[0]!r} in {input_path} (columns: {', '.join(columns)}); "
            "name the ids with id_column= and the texts with text_column="
        )
    fs, directory = _filesystem(output_path)
    written = _written_ids(fs, directory, id_column)
    if written is not None:
        ds = ds.map_batches(
            _drop_written,
            fn_kwargs={"id_column": id_column, "written": [ray.put(written)]},
            batch_size=None,
            batch_format="pyarrow",
        )
    # Blocks of a fraction of rows_per_block, that many handed to each actor and run at once
    # on its event loop: the next block's requests fill the slots a block's last requests
    # and its write leave idle, and a failure still loses at most rows_per_block rows per
    # actor (the blocks it held).
    in_flight = _BLOCKS_IN_FLIGHT
    plan = replace(plan, rows_per_block=max(1, -(-plan.rows_per_block // in_flight)))
    done = _map(
        ds,
        plan,
        _BlockWriter,
        extra={"output_path": output_path, "id_column": id_column},
        tasks_per_actor=in_flight,
        calls_per_actor=in_flight,
    )
    embedded = sum(
        int(pc.sum(batch.column("rows")).as_py() or 0)
        for batch in done.iter_batches(batch_size=None, batch_format="pyarrow")
    )
    return ParquetRun(embedded=embedded, already_written=0 if written is None else len(written))
