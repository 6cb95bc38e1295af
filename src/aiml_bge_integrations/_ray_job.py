"""``aiml-bge embed INPUT -o OUT_DIR --ray``: the corpus job on Ray Data, on the job's core.

The input (a text file, JSONL or a directory, read and checked as ``aiml-bge embed`` reads
it, with the same ids) is staged once as Parquet in ``<OUT_DIR>.partial/``; Ray Data reads it,
``embed_parquet`` embeds it on an actor pool and writes ``OUT_DIR/`` (Parquet files with
``id``, the text, the input's other JSONL fields and ``embedding``), one file per block,
written by the actor that embedded it. Run again after a failure, it reads the ids already in
``OUT_DIR/`` and writes only the others.

It keeps the guarantees of ``aiml-bge embed`` with the same checkpoint (``_job.checkpoint``):
the lock of ``<OUT_DIR>.partial/`` is taken before anything is read or removed (a second run
of the same output is refused with ``OutputBusyError``), ``state.json`` is replaced
atomically and says which run it is (input, model, long-text policy), nothing is reached
through a symbolic link, and only the job's own files are deleted. When every block is
written, the output's rows are counted against the input before the run reports success
and writes ``<OUT_DIR>.manifest.json``; a completed run run again says so and changes
nothing.

``OUT_DIR`` and its ``.partial`` sibling must be on storage every Ray node sees (a local
path is fine for a single node). The key is never passed to Ray: the workers read it from
their environment (a local node inherits this process's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from ._batching import effective_long_text, policy_window
from ._job import InputSource, JobSpec, JsonlSource, open_source, scan
from ._job.checkpoint import Checkpoint, State, check_rows, work_dir_for
from ._job.files import open_file, refuse_link, remove_dir, remove_files, write_atomic
from ._job.plan import difference, long_text_verdict, run_identity
from ._job.run import manifest_for, read_manifest
from ._settings import API_KEY_ENV, resolve_settings
from .errors import AimlBgeError, InputFileError, OutputError

__all__ = ["RayJobResult", "RayJobSpec", "local_node_environment", "run_ray_job"]

_STAGE_ROWS = 8192


@dataclass
class RayJobSpec(JobSpec):
    """One ``aiml-bge embed --ray`` run: the job's spec, the client settings, and the cluster."""

    settings: dict[str, Any] = field(default_factory=dict)
    """Client settings from the command line (``max_concurrency`` and the per-minute paces
    are for the whole cluster)."""
    actors: int | None = None
    """Embedding actors (``None``: ``ray.DEFAULT_ACTORS``)."""
    ray_address: str | None = None
    """The cluster to use (``None``: a single local node on 127.0.0.1)."""


@dataclass
class RayJobResult:
    """What a ``--ray`` run did."""

    output: Path
    """The Parquet directory."""
    total: int
    """Passages in the input (all now in ``output``)."""
    resumed: bool
    """Whether an unfinished run was continued."""
    seconds: float
    """Wall time of this run."""
    embedded: int
    """Passages embedded by this run (the others were written by the runs before)."""
    already_complete: bool = False
    """The output was already complete for this input and settings; nothing was sent or written."""


_STAGED = "input.parquet"


_RESERVED = ("id", "text", "embedding")


def _jsonl_extras(source: JsonlSource) -> Iterator[dict[str, Any]]:
    # The other fields of each record, in the order records() yields them (blank lines skipped).
    with open(source.path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            record = orjson.loads(raw)
            extras = {k: v for k, v in record.items() if k not in (source.field, source.id_field)}
            clash = next((k for k in _RESERVED if k in extras), None)
            if clash is not None:
                raise InputFileError(
                    f"{source.path}:{n}: field {clash!r} would clash with the output's "
                    f"{clash!r} column; with --ray, name it with --field or --id-field, or "
                    "rename it",
                    path=source.path,
                    line=n,
                )
            yield extras


def _stage(source: InputSource, target: Path, text_column: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    extras = _jsonl_extras(source) if isinstance(source, JsonlSource) else None
    writer: Any = None
    rows: list[dict[str, Any]] = []
    sink = open_file(target, "wb")

    def flush() -> None:
        nonlocal writer
        table = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema)
        writer.write_table(table.cast(writer.schema))
        rows.clear()

    try:
        for passage in source.records():
            row = {"id": passage.id, text_column: passage.text}
            if extras is not None:
                row.update(next(extras))
            rows.append(row)
            if len(rows) == _STAGE_ROWS:
                flush()
        if rows:
            flush()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise InputFileError(
            f"{source.path}: the records' fields do not fit one table ({err})", path=source.path
        ) from None
    finally:
        if writer is not None:
            writer.close()
        sink.close()


def local_node_environment(base_url: str | None = None) -> dict[str, str]:
    """Environment for a local Ray node's processes that keeps their own traffic on loopback.

    Ray's dashboard process asks the cloud metadata endpoints (169.254.169.254 and
    ``metadata.google.internal``, with the ``requests`` library) which cloud it runs on, even
    with usage stats off. A proxy on a closed loopback port makes those requests fail at once;
    loopback and the host of ``base_url`` are exempt, so the actors reach the server directly.
    Only plain-HTTP requests honour ``http_proxy``: HTTPS traffic is not affected.
    """
    exempt = ["127.0.0.1", "localhost", "::1"]
    host = httpx.URL(base_url).host if base_url else ""
    if host and host not in exempt:
        exempt.append(host)
    return {"http_proxy": "http://127.0.0.1:9", "no_proxy": ",".join(exempt)}


def _start_ray(address: str | None, base_url: str | None = None) -> Callable[[], None]:
    """Connect to ``address``, or start a single local node on 127.0.0.1; returns the stop."""
    if address is None:
        # Read by Ray on import: keeps a local node's sockets on the loopback address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return lambda: None
    if address is None:
        # The node's processes inherit this environment when they start. A user's own HTTP
        # proxy is left as it is; their no_proxy list is kept and extended.
        saved = {name: os.environ.get(name) for name in ("http_proxy", "no_proxy")}
        if not (os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY")):
            node = local_node_environment(base_url)
            theirs = os.environ.get("no_proxy") or os.environ.get("NO_PROXY")
            if theirs:
                node["no_proxy"] += "," + theirs
            os.environ.update(node)
        try:
            ray.init(
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                # Logical CPUs, not cores: actors take a fraction of one and mostly wait on
                # the network, while the read and repartition tasks take one each.
                num_cpus=max(8, os.cpu_count() or 1),
                log_to_driver=False,
                configure_logging=False,
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    stop: Callable[[], None] = ray.shutdown
    return stop


def _our_error(err: BaseException) -> AimlBgeError | None:
    # Ray wraps a failure in an actor in its own exceptions; the cause is what to report.
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, AimlBgeError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _our_part_files(output: Path) -> list[str] | None:
    """Names of the files ``embed_parquet`` writes in ``output``; ``None`` if it holds others."""
    from .ray import _is_part_file

    names = os.listdir(output)
    ours = [name for name in names if _is_part_file(name)]
    return ours if len(ours) == len(names) else None


def _clear_output(output: Path) -> None:
    """Remove an earlier output directory, file by file, if it holds only the job's files."""
    if not refuse_link(output):
        return
    if not output.is_dir():
        raise OutputError(f"cannot write {output}: it exists and is not a directory")
    ours = _our_part_files(output)
    if ours is None:
        raise OutputError(
            f"{output} holds files aiml-bge embed --ray did not write; it replaces only its own "
            "output: move them, or choose another output directory"
        )
    remove_files(output, ours)
    remove_dir(output)
    remove_files(output.parent, [manifest_for(output).name])


def _written(output: Path) -> tuple[int, int | None, list[str]]:
    """Rows in the output's finished part files, the vectors' length (``None``: no rows), and
    the models the server named in its replies for them (each once, sorted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .ray import SERVED_MODEL_METADATA, _is_part_file

    rows = 0
    dimension = None
    served: set[str] = set()
    for name in sorted(os.listdir(output)):
        if _is_part_file(name, finished=True):
            with open_file(output / name, "rb") as f:
                meta = pq.read_metadata(f)
                schema = meta.schema.to_arrow_schema()
                column = schema.field("embedding").type
            rows += meta.num_rows
            if isinstance(column, pa.FixedSizeListType):
                dimension = column.list_size
            named = (schema.metadata or {}).get(SERVED_MODEL_METADATA)
            if named:
                served.add(named.decode("utf-8", "replace"))
    return rows, dimension, sorted(served)


def run_ray_job(
    spec: RayJobSpec, *, key: str | None, notice: Callable[[str], None]
) -> RayJobResult:
    """Embed ``spec.input`` into the Parquet directory ``spec.output`` on Ray; resumable.

    ``key``, when given, is put in this process's environment for a local node to inherit;
    it is never passed to Ray. Raises the job's errors (``OutputBusyError`` while another run
    holds the output's lock, ``ResumeError`` for a checkpoint of another run) or the core's.
    """
    started = time.monotonic()
    output = spec.output
    if not output.parent.is_dir():
        raise OutputError(f"cannot write {output}: directory {output.parent} does not exist")
    refuse_link(output)
    refuse_link(manifest_for(output))
    # Every setting resolved as the actors' clients resolve it (model and long_text from the
    # environment where the user set them there), checked once, here.
    resolved = resolve_settings({k: v for k, v in spec.settings.items() if k != "api_key"})
    resolved.pop("api_key", None)  # the key stays in this process's environment
    checkpoint = Checkpoint(work_dir_for(output), output, [_STAGED])
    try:
        return _run_locked(spec, checkpoint, resolved, key, notice, started)
    except BaseException:
        if not checkpoint.exists():  # nothing staged: leave no work directory behind
            checkpoint.remove()
        raise
    finally:
        checkpoint.release()


def _run_locked(
    spec: RayJobSpec,
    checkpoint: Checkpoint,
    resolved: dict[str, Any],
    key: str | None,
    notice: Callable[[str], None],
    started: float,
) -> RayJobResult:
    from .ray import DEFAULT_ACTORS, _embed_parquet

    output, work = spec.output, checkpoint.work
    model, long_text = resolved["model"], resolved["long_text"]
    source = open_source(spec.input, spec.input_format, spec.field, spec.id_field)
    applied = effective_long_text(model, long_text)
    scanned = scan(source, window=policy_window(model) if applied != "none" else None)
    if scanned.total == 0:
        raise InputFileError(f"{spec.input}: no passages to embed", path=spec.input)
    told = long_text_verdict(scanned, source=source, model=model, long_text=applied)
    if told:
        notice(told)
    identity = run_identity(
        source, scanned, model=model, long_text=long_text, output_format="ray-parquet"
    )
    if spec.restart:
        checkpoint.clear()
        _clear_output(output)
    state = checkpoint.load(identity)
    resumed = state is not None
    if state is None:
        if refuse_link(output):
            manifest = read_manifest(output)
            complete = (
                not spec.overwrite
                and manifest is not None
                and manifest.get("identity") == identity
                and output.is_dir()
                and _written(output)[0] == scanned.total
            )
            if complete:
                checkpoint.remove()
                return RayJobResult(
                    output, scanned.total, False, time.monotonic() - started, 0, True
                )
            if not spec.overwrite:
                before = manifest.get("identity") if manifest is not None else None
                changed = (
                    difference(before, identity, "the output's") if isinstance(before, dict) else []
                )
                how = f" and was made otherwise ({'; '.join(changed)})" if changed else ""
                raise OutputError(f"{output} exists{how}; pass --overwrite to replace it")
            _clear_output(output)
        checkpoint.clear()
        _stage(source, work / _STAGED, "text")
        checkpoint.save(State(identity, phase="ray"))
    else:
        import pyarrow.parquet as pq

        with open_file(work / _STAGED, "rb") as f:
            check_rows(str(work / _STAGED), pq.read_metadata(f).num_rows, scanned.total)
        notice(f"continuing the unfinished run in {work}")

    if key is not None and spec.ray_address is None:
        os.environ[API_KEY_ENV] = key  # inherited by the local node's workers, nothing else
    stop = _start_ray(spec.ray_address, spec.settings.get("base_url"))
    try:
        import ray.data

        ray.data.DataContext.get_current().raise_original_map_exception = True
        done = _embed_parquet(
            str(work / _STAGED),
            str(output),
            id_column="id",
            actors=spec.actors or DEFAULT_ACTORS,
            **spec.settings,
        )
    except Exception as err:
        ours = _our_error(err)
        if ours is None or ours is err:
            raise
        raise ours from None
    finally:
        stop()
    rows, dimension, served = _written(output)
    check_rows(f"{output}/", rows, scanned.total)
    write_atomic(manifest_for(output), _manifest(identity, resolved, rows, dimension, served))
    checkpoint.remove()
    return RayJobResult(output, scanned.total, resumed, time.monotonic() - started, done.embedded)


def _manifest(
    identity: dict[str, Any],
    resolved: dict[str, Any],
    rows: int,
    dimension: int | None,
    served: list[str],
) -> bytes:
    from . import __version__

    model, long_text = resolved["model"], resolved["long_text"]
    return orjson.dumps(
        {
            "manifest_version": 1,
            "package_version": __version__,
            "rows": rows,
            "dimension": dimension,
            "model": model,
            "model_served": served[-1] if served else None,
            "models_served": served,
            "base_url": resolved["base_url"],
            "long_text": long_text,
            "long_text_applied": effective_long_text(model, long_text),
            "document_instruction": resolved["document_instruction"],
            "query_instruction": resolved["query_instruction"],
            "document_input_type": resolved["document_input_type"],
            "query_input_type": resolved["query_input_type"],
            "output_format": "ray-parquet",
            "dtype": "float32",
            "identity": identity,
        },
        option=orjson.OPT_INDENT_2,
    )
