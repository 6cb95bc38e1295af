"""``aiml-bge embed INPUT -o OUT_DIR --ray``: the corpus job on Ray Data, resumable by id.

The input (a text file, JSONL or a directory, read and checked as ``aiml-bge embed`` reads
it, with the same ids) is staged once as Parquet in ``<OUT_DIR>.partial/``; Ray Data reads it,
``embed_parquet`` embeds it on an actor pool and writes ``OUT_DIR/`` (Parquet files with
``id``, the text, the input's other JSONL fields and ``embedding``), one file per block,
written by the actor that embedded it. Run again after a failure, it reads the ids already in
``OUT_DIR/`` and writes only the others; on success ``<OUT_DIR>.partial/`` is removed.

``OUT_DIR`` and its ``.partial`` sibling must be on storage every Ray node sees (a local
path is fine for a single node). The key is never passed to Ray: the workers read it from
their environment (a local node inherits this process's).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from ._job import (
    InputFileError,
    InputSource,
    JsonlSource,
    OutputError,
    ResumeError,
    open_source,
    scan,
)
from ._settings import API_KEY_ENV, BGE_MAX_TOKENS, is_bge_model
from .errors import AimlBgeError

__all__ = ["RayJobResult", "local_node_environment", "run_ray_job"]

_STAGE_ROWS = 8192


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


def _work_dir(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


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

    def flush() -> None:
        nonlocal writer
        table = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(str(target), table.schema)
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


def run_ray_job(
    *,
    input_path: Path,
    output: Path,
    input_format: str,
    field: str,
    id_field: str | None,
    overwrite: bool,
    restart: bool,
    settings: dict[str, Any],
    actors: int | None,
    ray_address: str | None,
    key: str | None,
    notice: Callable[[str], None],
) -> RayJobResult:
    """Embed ``input_path`` into the Parquet directory ``output`` on Ray; resumable.

    ``settings`` are the client settings from the command line (``max_concurrency`` and the
    per-minute paces are for the whole cluster). ``key``, when given, is put in this
    process's environment for a local node to inherit; it is never passed to Ray.
    """
    from .ray import DEFAULT_ACTORS, embed_parquet

    started = time.monotonic()
    work = _work_dir(output)
    if restart and work.exists():
        shutil.rmtree(work)
        shutil.rmtree(output, ignore_errors=True)
    resumable = (work / "state.json").exists()
    if output.exists() and not resumable:
        if not overwrite:
            raise OutputError(f"{output} exists; pass --overwrite to replace it")
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    if not output.parent.is_dir():
        raise OutputError(f"cannot write {output}: directory {output.parent} does not exist")

    source = open_source(input_path, input_format, field, id_field)
    model = str(settings.get("model") or "")
    long_text = settings.get("long_text", "truncate")
    scanned = scan(source, check_long=(not model or is_bge_model(model)) and long_text != "none")
    if scanned.total == 0:
        raise InputFileError(f"{input_path}: no passages to embed", path=input_path)
    if scanned.over_limit and long_text == "error":
        raise InputFileError(
            f"{input_path}: {scanned.over_limit} passage(s) exceed {BGE_MAX_TOKENS} tokens "
            f"({source.id_label} {scanned.over_examples[0][0]} first); split them, or use "
            "--long-text truncate",
            path=input_path,
        )
    identity = {
        **source.settings(),
        "input": str(input_path.resolve()),
        "fingerprint": scanned.fingerprint,
        "total": scanned.total,
        "model": model,
        "long_text": long_text,
    }
    if resumable:
        saved = orjson.loads((work / "state.json").read_bytes())
        if saved != identity:
            changed = sorted(k for k in identity if saved.get(k) != identity[k])
            raise ResumeError(
                f"{work} holds an unfinished run with a different {', '.join(changed)}; "
                "rerun it with the same input and settings, or pass --restart to start over"
            )
        notice(f"continuing the unfinished run in {work}")
    else:
        work.mkdir(exist_ok=True)
        _stage(source, work / "input.parquet", "text")
        (work / "state.json").write_bytes(orjson.dumps(identity))

    if key is not None and ray_address is None:
        os.environ[API_KEY_ENV] = key  # inherited by the local node's workers, nothing else
    stop = _start_ray(ray_address, settings.get("base_url"))
    try:
        import ray.data

        ray.data.DataContext.get_current().raise_original_map_exception = True
        done = embed_parquet(
            str(work / "input.parquet"),
            str(output),
            id_column="id",
            actors=actors or DEFAULT_ACTORS,
            **settings,
        )
    except Exception as err:
        ours = _our_error(err)
        if ours is None or ours is err:
            raise
        raise ours from None
    finally:
        stop()
    shutil.rmtree(work, ignore_errors=True)
    return RayJobResult(output, scanned.total, resumable, time.monotonic() - started, done.embedded)
