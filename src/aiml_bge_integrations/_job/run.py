"""Running the job: take the lock, scan, resume or start, embed, check, rename into place.

``run_job`` is the whole of ``aiml-bge embed`` but the command line: it is built on the
readers (``sources``), the plan (``plan``), the sinks (``sinks``) and the checkpoint
(``checkpoint``), the same ones the Ray job uses.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from .._batching import (
    LongTextWarning,
    apply_long_text_policy,
    effective_long_text,
    policy_window,
)
from .._models import same_model
from ..client import EmbeddingsClient, Usage
from ..errors import (
    ConfigurationError,
    InputFileError,
    ItemRejectedError,
    OutputError,
    ResumeError,
    TextTooLongError,
)
from .checkpoint import Checkpoint, State, saved_progress, work_dir_for
from .files import open_file, refuse_link, write_atomic
from .plan import (
    DISTINCT_REMEMBERED,
    ScanResult,
    difference,
    long_text_verdict,
    run_identity,
    scan,
    text_key,
)
from .sinks import Refused, Row, Sink, ids_sidecar_for, make_sink, output_format_for
from .sources import InputSource, PassageId, open_source

__all__ = [
    "ON_ERROR",
    "JobResult",
    "JobSpec",
    "Notice",
    "Progress",
    "check_on_error",
    "manifest_for",
    "read_manifest",
    "run_job",
    "served_model_of",
]

MANIFEST_VERSION = 1
ON_ERROR = ("stop", "record")
"""What a run does with a passage the server refuses for its own content: stop there
(naming it), or write it with its error instead of a vector and go on."""
ERROR_EXAMPLES = 5
"""Refused rows a run's result and manifest name (all are counted)."""
REFUSED_IN_A_ROW = 100
"""With ``on_error="record"``, server refusals in a row (no vector between them) after which
the run stops anyway: a server that refuses every passage is not refusing their content."""
_STATE_SECONDS = 2.0


@dataclass
class JobSpec:
    """One ``aiml-bge embed`` run."""

    input: Path
    output: Path
    input_format: str = "auto"
    """``auto``, ``text``, ``jsonl`` or ``dir``."""
    output_format: str = "auto"
    """``auto`` (from the suffix), ``jsonl``, ``npy`` or ``parquet``."""
    field: str = "text"
    id_field: str | None = None
    dtype: str = "float32"
    """Float type of ``.npy`` and Parquet output."""
    overwrite: bool = False
    """Replace an existing output (it stays until the new one is complete)."""
    restart: bool = False
    """Discard an unfinished run's state and start from the first passage."""
    on_error: str = "stop"
    """``stop`` (the default): a passage the server refuses ends the run, naming it;
    ``record``: it is written with its error instead of a vector (not with ``.npy``)."""


@dataclass
class JobResult:
    """What a finished run did."""

    output: Path
    sidecar: Path | None
    total: int
    dim: int | None
    resumed_from: int
    """Passages already done by earlier, interrupted runs."""
    usage: Usage
    """This run's requests, tokens and credits."""
    total_usage: dict[str, float]
    """All runs of this job together: requests, retries, prompt_tokens, credits, usd."""
    seconds: float
    """This run's wall time."""
    over_limit: int
    """Passages over the token window (truncated, with ``long_text="truncate"``)."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Every run of the job, this one last: ``model`` (as requested), ``model_served`` (as the
    server's replies named it; None before a reply), ``base_url`` and ``resumed_from``."""
    already_complete: bool = False
    """The output was already complete for this input and settings; nothing was sent or written."""
    shared: int = 0
    """Passages this run did not send: the same text came earlier in the run, and its vector
    was written for them too."""
    errors: int = 0
    """Rows written with an error instead of a vector (``on_error="record"``), all runs."""
    error_examples: list[list[Any]] = field(default_factory=list)
    """The first few of them: ``[id, error]``."""


Progress = Callable[[int, int, Usage], None]
"""``progress(done, total, usage_this_run)``, called after every checkpoint."""
Notice = Callable[[str], None]
"""``notice(message)``: one line for the user."""


def manifest_for(output: Path) -> Path:
    """Where the manifest of ``output`` goes: ``<output>.manifest.json`` next to it."""
    return output.with_name(output.name + ".manifest.json")


def read_manifest(output: Path) -> dict[str, Any] | None:
    """The manifest beside ``output``, or ``None`` when there is none or it cannot be read."""
    try:
        with open_file(manifest_for(output), "rb") as f:
            data = orjson.loads(f.read())
    except (OSError, ValueError, OutputError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class _Run:
    # Everything one run works with, decided before it embeds anything.
    spec: JobSpec
    source: InputSource
    client: EmbeddingsClient
    output_format: str
    checkpoint: Checkpoint
    sink: Sink
    say: Notice
    progress: Progress | None
    started: float
    scanned: ScanResult = field(default_factory=ScanResult)
    identity: dict[str, Any] = field(default_factory=dict)
    shared: int = 0
    """Passages of this run that got an identical earlier passage's vector, unsent."""


def _outputs(spec: JobSpec, output_format: str) -> list[Path]:
    """Every path the job writes outside its work directory."""
    paths = [spec.output, manifest_for(spec.output)]
    if output_format == "npy":
        paths.append(ids_sidecar_for(spec.output))
    return paths


def _check_output(spec: JobSpec, output_format: str) -> None:
    out = spec.output
    parent = out.parent
    if not parent.exists():
        raise OutputError(f"cannot write {out}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: {parent} is not a directory")
    for path in _outputs(spec, output_format):
        refuse_link(path)
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a directory")
    if out.exists() and spec.input.exists() and out.resolve() == spec.input.resolve():
        raise OutputError(f"the output {out} is the input: choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: directory {parent} is not writable")


def _exists_error(spec: JobSpec, how: str = "") -> OutputError:
    return OutputError(f"{spec.output} exists{how}; pass --overwrite to replace it")


def _made_otherwise(output: Path, identity: dict[str, Any]) -> str:
    """How the run that wrote ``output`` (its manifest says) differs from this command."""
    manifest = read_manifest(output)
    before = manifest.get("identity") if manifest is not None else None
    if not isinstance(before, dict):
        return ""
    changed = difference(before, identity, whose="the output's")
    return f" and was made otherwise ({'; '.join(changed)})" if changed else ""


def check_on_error(on_error: str, output_format: str) -> None:
    """Raise ``ConfigurationError`` unless ``on_error`` is known and the format can hold it."""
    if on_error not in ON_ERROR:
        raise ConfigurationError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    if on_error == "record" and output_format == "npy":
        raise ConfigurationError(
            "--on-error record needs an output that can hold a row without a vector: .npy "
            "is a matrix of vectors only; write .jsonl or .parquet, or use --on-error stop"
        )


def run_job(
    spec: JobSpec,
    make_client: Callable[[], EmbeddingsClient],
    *,
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> JobResult:
    """Run (or resume) the job ``spec`` with the client ``make_client`` builds.

    The run first takes the lock of its work directory: while one run of an output is
    working, another (with ``restart`` or not) raises ``OutputBusyError`` and changes
    nothing. Bad input is found before anything is sent; ``long_text="error"`` refuses
    over-long passages then too, naming them. A run whose output is already complete for
    this input and these settings (its manifest says so and its rows check) returns at once
    with ``already_complete``. Raises ``InputFileError``, ``OutputError``,
    ``OutputBusyError``, ``ResumeError``, or the core's errors; on any failure the last
    checkpoint stays in the work directory and the same call continues from it.
    """
    say = notice or (lambda _msg: None)
    started = time.monotonic()
    output_format = (
        output_format_for(spec.output) if spec.output_format == "auto" else spec.output_format
    )
    check_on_error(spec.on_error, output_format)
    _check_output(spec, output_format)
    work = work_dir_for(spec.output)
    sink = make_sink(
        output_format, work, spec.output, spec.dtype, errors_column=spec.on_error == "record"
    )
    # Before anything in the work directory is read or deleted.
    checkpoint = Checkpoint(work, spec.output, sink.owned_names)
    try:
        resumable = checkpoint.exists() and not spec.restart
        finished = spec.output.exists() and not spec.overwrite and not resumable
        if finished and read_manifest(spec.output) is None:
            raise _exists_error(spec)  # no manifest: it cannot be this run's, complete
        source = open_source(spec.input, spec.input_format, spec.field, spec.id_field)
        client = make_client()
        try:
            run = _Run(
                spec, source, client, output_format, checkpoint, sink, say, progress, started
            )
            return _run_checked(run)
        finally:
            client.close()
    except BaseException:
        saved = saved_progress(work)
        if saved is None or saved[0] == 0:
            # Nothing worth resuming: leave no staging directory behind.
            checkpoint.remove()
        raise
    finally:
        checkpoint.release()


def _run_checked(run: _Run) -> JobResult:
    spec, source, client = run.spec, run.source, run.client
    long_text = effective_long_text(client.model, client.long_text)
    window = policy_window(client.model) if long_text != "none" else None
    run.scanned = scanned = scan(source, window=window)
    if scanned.total == 0:
        raise InputFileError(
            f"{spec.input}: no passages to embed (every line is blank)", path=spec.input
        )
    recording = spec.on_error == "record"
    told = long_text_verdict(
        scanned, source=source, model=client.model, long_text=long_text, recorded=recording
    )
    if told:
        run.say(told)
    run.identity = run_identity(
        source,
        scanned,
        model=client.model,
        long_text=client.long_text,
        output_format=run.output_format,
        dtype=spec.dtype if run.output_format != "jsonl" else None,
        # Only when recording, so that the checkpoints of runs that stop stay as they were.
        **({"on_error": "record"} if recording else {}),
    )
    if spec.restart:
        run.checkpoint.clear()
    state = run.checkpoint.load(run.identity)
    if state is None:
        if spec.output.exists() and not spec.overwrite:
            done = _already_complete(run)
            if done is not None:
                return done
            raise _exists_error(spec, _made_otherwise(spec.output, run.identity))
        run.checkpoint.clear()
        return _run_locked(run, State(run.identity), resumed=False)
    return _run_locked(run, state, resumed=True)


def _already_complete(run: _Run) -> JobResult | None:
    """The result of the run that wrote the output, if it is complete for this very command."""
    manifest = read_manifest(run.spec.output)
    if manifest is None or manifest.get("identity") != run.identity:
        return None
    dim = manifest.get("dimension")
    if run.sink.check_built(run.scanned.total, dim if isinstance(dim, int) else None):
        return None
    run.checkpoint.remove()
    return JobResult(
        output=run.spec.output,
        sidecar=ids_sidecar_for(run.spec.output) if run.output_format == "npy" else None,
        total=run.scanned.total,
        dim=dim if isinstance(dim, int) else None,
        resumed_from=run.scanned.total,
        usage=run.client.usage,
        total_usage=dict(manifest.get("usage") or {}),
        seconds=time.monotonic() - run.started,
        over_limit=run.scanned.over_limit,
        runs=list(manifest.get("runs") or []),
        already_complete=True,
        errors=int(manifest.get("errors") or 0),
        error_examples=list(manifest.get("error_examples") or []),
    )


def _run_locked(run: _Run, state: State, *, resumed: bool) -> JobResult:
    sink, checkpoint = run.sink, run.checkpoint
    total = run.scanned.total
    if state.phase == "embedding":
        try:
            sink.open(state.positions if resumed else None)
        except OSError as err:
            raise OutputError(f"cannot write {checkpoint.work}: {err.strerror or err}") from None
        try:
            if resumed:
                checkpoint.check_staged(sink, state)
                _recover(run, state)
            else:
                state.positions = sink.sync()
            _record_run(run, state)
            checkpoint.save(state)
            resumed_from = state.done
            _embed_rest(run, state)
        finally:
            sink.close()
        state.phase = "finalizing"
        checkpoint.save(state)
    else:
        _record_run(run, state)
        resumed_from = state.done
    _finalize(run, state)
    return JobResult(
        output=run.spec.output,
        sidecar=ids_sidecar_for(run.spec.output) if run.output_format == "npy" else None,
        total=total,
        dim=state.dim,
        resumed_from=resumed_from,
        usage=run.client.usage,
        total_usage=asdict(state.usage),
        seconds=time.monotonic() - run.started,
        over_limit=run.scanned.over_limit,
        runs=state.runs,
        shared=run.shared,
        errors=state.errors,
        error_examples=state.error_examples,
    )


def _record_run(run: _Run, state: State) -> None:
    """Add this run to the job's record; say so when it resumes another's work elsewhere."""
    client = run.client
    earlier = {r["base_url"] for r in state.runs} - {client.base_url}
    state.runs.append(
        {
            "model": client.model,
            "model_served": None,
            "base_url": client.base_url,
            "resumed_from": state.done,
        }
    )
    if state.done:
        at = f" at {', '.join(sorted(earlier))}; this run sends to {client.base_url}"
        run.say(
            f"resuming: {state.done:,} of {run.scanned.total:,} passages were done by an "
            f"earlier run{at if earlier else ''}"
        )


def _recover(run: _Run, state: State) -> None:
    """Adopt the rows written after the last checkpoint (up to a kill); cut off any torn tail."""
    ids = (p.id for p in islice(run.source.records(), state.done, None))
    extra, positions, dim = run.sink.recover(state.positions, ids, state.dim)
    run.sink.cut(positions)
    state.done += extra
    state.dim = dim
    state.positions = positions
    for pid, error in run.sink.recovered_errors:
        _count_error(state, pid, error)


def _count_error(state: State, pid: PassageId, error: str) -> None:
    state.errors += 1
    if len(state.error_examples) < ERROR_EXAMPLES:
        state.error_examples.append([pid, error])


@dataclass
class _Pulled:
    # One passage read from the input and not yet added to the output.
    id: PassageId
    row: int
    first: int
    """-1: this passage is sent (``text`` is what); >= 0: the row of the first passage with the
    same text, whose vector (or error) it gets; -2: refused, its error in ``refused[row]``."""
    text: str | None = None


def _reason(err: ItemRejectedError | TextTooLongError, index: int, model: str) -> str:
    """What a refused row's ``error`` says: the server's reason, without the stream's index."""
    if isinstance(err, TextTooLongError):
        return _over_window(model, err.token_counts.get(index))
    return f"refused by the server (HTTP {err.status_code}): {_server_said(err)}"


def _server_said(err: ItemRejectedError) -> str:
    """The server's reason in ``err``, without the index in the stream the client names."""
    prefix = f"the server refused the text at index {err.index}: "
    said = err.message
    return said[len(prefix) :] if said.startswith(prefix) else said


def _over_window(model: str, tokens: int | None) -> str:
    counted = f" ({tokens} tokens)" if tokens else ""
    return (
        f"over the token window of {model}{counted} (--long-text error); split it, or use "
        "--long-text truncate"
    )


def _too_long(run: _Run, text: str) -> str | None:
    """Why ``text`` is refused under ``long_text="error"`` (as the client would refuse it), if it is."""
    client = run.client
    try:
        apply_long_text_policy([(client.document_instruction or "") + text], client.model, "error")
    except TextTooLongError as err:
        return _over_window(client.model, next(iter(err.token_counts.values()), None))
    return None


def _embed_rest(run: _Run, state: State) -> None:
    """Embed the passages after ``state.done``, appending each batch to the sink in order.

    A passage whose text is the same as an earlier one of this run is not sent: its row gets
    that passage's vector (the first ``DISTINCT_REMEMBERED`` distinct texts are remembered).
    With ``on_error="record"``, a passage the server refuses for its own content (or that is
    over the token window under ``long_text="error"``) is written with its error, and the
    stream goes on from the passages after it that have no vector yet.
    """
    source, client, sink, progress = run.source, run.client, run.sink, run.progress
    total = run.scanned.total
    recording = run.spec.on_error == "record"
    check_long = recording and effective_long_text(client.model, client.long_text) == "error"
    first_row = state.done  # the row the sink's first write of this run starts with
    seen: dict[bytes, int] = {}
    refused: dict[int, str] = {}  # row -> error, for this run's refused passages
    # Passages pulled, in order, not yet added to the output.
    ids: deque[_Pulled] = deque()
    records = islice(source.records(), state.done, None)
    pulled = state.done  # the row of the next passage read

    def texts(resend: list[_Pulled]) -> Iterator[str]:
        # One stream's texts: first those pulled before and still without a vector, then new.
        nonlocal pulled
        for entry in resend:
            assert entry.text is not None
            yield entry.text
        for passage in records:
            row = pulled
            pulled += 1
            key = text_key(passage.text)
            first = seen.get(key, -1)
            if first < 0 and len(seen) < DISTINCT_REMEMBERED:
                seen[key] = row
            entry = _Pulled(passage.id, row, first)
            if first < 0 and check_long:
                why = _too_long(run, passage.text)
                if why is not None:
                    refused[row] = why
                    entry.first = -2
            ids.append(entry)
            if entry.first == -1:
                entry.text = passage.text
                yield passage.text

    # Batches are ``chunk`` consecutive passages from where this run starts: writing after
    # every ``chunk`` vectors writes whole batches.
    chunk = client.effective_batch_size
    base = state.usage
    # What is written: passages done, each staged file's length just after them, and the
    # refused rows among them (a count, the first few). All change in one assignment, after a
    # batch is written: interrupted before it, the mark is the old one and the next run finds
    # the batch after it and adopts it (checking its ids); after it, the new one. A checkpoint
    # saves this mark, so no run sees a batch twice, nor counts its refused rows twice.
    mark: tuple[int, dict[str, int], int, list[list[Any]]] = (
        state.done,
        dict(state.positions),
        state.errors,
        list(state.error_examples),
    )
    rows: list[Row] = []
    last_save = time.monotonic()
    dim_saved = state.dim is not None
    # A matrix gives a refused row zeros of the vectors' length: until one vector has come,
    # rows wait in memory.
    held = sink.needs_dim

    def save() -> None:
        sink.sync(durable=True)
        state.done, state.positions, state.errors, state.error_examples = mark
        state.usage = base.plus(client.usage)
        run.checkpoint.save(state)

    def write(batch: list[Row]) -> None:
        nonlocal mark
        refused_here = [[pid, v.error] for pid, v in batch if isinstance(v, Refused)]
        sink.write(batch, state.dim)
        mark = (
            mark[0] + len(batch),
            sink.sync(durable=False),
            mark[2] + len(refused_here),
            (mark[3] + refused_here)[:ERROR_EXAMPLES],
        )

    def add(pid: PassageId, vector: list[float] | Refused) -> None:
        nonlocal rows
        rows.append((pid, vector))
        if len(rows) >= chunk and not (held and state.dim is None):
            batch, rows = rows, []  # from here these rows are the write's to make
            write(batch)
            checkpoint()

    def vector_of(row: int) -> list[float] | Refused:
        if row in refused:
            return Refused(refused[row])
        if row >= mark[0]:
            got = rows[row - mark[0]][1]  # not written yet
            assert not isinstance(got, Refused)
            return got
        return sink.vector_of(row - first_row)

    def add_ready() -> None:
        # The passages before the next one sent: repeats, and passages refused unsent.
        while ids and ids[0].first != -1:
            entry = ids.popleft()
            if entry.first == -2:
                add(entry.id, Refused(refused[entry.row]))
                continue
            got = vector_of(entry.first)
            if isinstance(got, Refused):
                refused[entry.row] = got.error
            else:
                run.shared += 1
            add(entry.id, got)

    def checkpoint() -> None:
        nonlocal last_save, dim_saved
        # Each batch goes to the OS at once (a killed process loses none of it: the next run
        # adopts whole rows past the checkpoint). The checkpoint itself, fsynced, costs
        # milliseconds, so it is renewed every few seconds, at the end, and on any failure.
        now = time.monotonic()
        if not dim_saved or mark[0] == total or now - last_save >= _STATE_SECONDS:
            save()
            last_save = now
            dim_saved = state.dim is not None
        if progress is not None:
            progress(mark[0], total, client.usage)

    refused_in_a_row = 0  # server refusals since the last vector

    def refuse(err: ItemRejectedError | TextTooLongError, got: int) -> list[_Pulled]:
        # The stream ended at a refusal: record the passages it names, and return those
        # still to send (the refused batch's others, and any read ahead), in order.
        nonlocal refused_in_a_row
        waiting = [e for e in ids if e.first == -1]
        at = [err.index] if isinstance(err, ItemRejectedError) else err.indices
        named = [(i, waiting[i - got]) for i in at if 0 <= i - got < len(waiting)]
        reasons = {i: _reason(err, i, client.model) for i, _ in named}
        if named:
            # The stream's index means nothing to the user: name the passage by its id.
            label = f"{source.id_label} {', '.join(str(e.id) for _, e in named)}"
            if isinstance(err, ItemRejectedError):
                err.message = f"{label}: the server refused this passage: {_server_said(err)}"
                err.args = (err.message,)
            else:
                err.args = (f"{label}: {err}",)
        if not recording or len(named) != len(at):
            raise err
        if isinstance(err, ItemRejectedError):
            refused_in_a_row += 1
            if refused_in_a_row >= REFUSED_IN_A_ROW:
                # The server refuses everything, not some passages' content: stop paying
                # a request per passage to learn it.
                err.message = (
                    f"{err.message} ({REFUSED_IN_A_ROW} passages in a row were refused "
                    "without one vector between them: the server seems to refuse every "
                    "passage; the run stops)"
                )
                err.args = (err.message,)
                raise err
        for i, entry in named:
            refused[entry.row] = reasons[i]
            entry.first, entry.text = -2, None
        return [e for e in waiting if e.first == -1]

    served: str | None = None

    if progress is not None:
        progress(mark[0], total, client.usage)
    try:
        with warnings.catch_warnings():
            # Over-long passages were counted and announced by the scan, once.
            warnings.simplefilter("ignore", LongTextWarning)
            resend: list[_Pulled] = []
            while True:
                got = 0  # vectors of this stream
                try:
                    for vector in client.iter_embeddings(texts(resend)):
                        got += 1
                        refused_in_a_row = 0
                        if served is None and client.served_model is not None:
                            served = client.served_model
                            _check_served(state, served)
                        if state.dim is None:
                            state.dim = len(vector)
                        elif len(vector) != state.dim:
                            raise OutputError(
                                f"the server returned a {len(vector)}-d vector after "
                                f"{state.dim}-d ones; the server or its model changed during "
                                "the run: rerun with --restart once it answers with one model"
                            )
                        add_ready()
                        add(ids.popleft().id, vector)
                except (ItemRejectedError, TextTooLongError) as err:
                    resend = refuse(err, got)
                    continue
                break
            add_ready()
            if rows:
                if held and state.dim is None:
                    raise OutputError(
                        f"every passage was refused ({state.errors:,}; the first: "
                        f"{state.error_examples[0][1] if state.error_examples else '?'}); "
                        f"{run.output_format} output needs at least one vector: write .jsonl "
                        "to keep the errors"
                    )
                batch, rows = rows, []
                write(batch)
                checkpoint()
    except BaseException:
        with contextlib.suppress(Exception):
            # Rows back but not yet written are saved too, when the staged files end where
            # the pair says; anything else there (a write cut short) is the next run's to check.
            if rows and sink.sync(durable=False) == mark[1]:
                write(rows)
            save()
        raise
    if mark[0] != total:
        raise ResumeError(
            f"embedded {mark[0]} passages but the input has {total}: it changed during the "
            "run; rerun with --restart"
        )
    state.done, state.positions, state.errors, state.error_examples = mark


def served_model_of(runs: list[dict[str, Any]]) -> str | None:
    """The model the server named in its replies, as the job's runs recorded it (the latest)."""
    named = [r.get("model_served") for r in runs if isinstance(r.get("model_served"), str)]
    return named[-1] if named else None


def _check_served(state: State, served: str) -> None:
    """Record the model this run's server names; refuse to mix vectors of two models."""
    before = served_model_of(state.runs[:-1])
    if before is not None and not same_model(served, before):
        raise ResumeError(
            f"the server now serves model {served!r}, but the earlier runs of this output got "
            f"their vectors from {before!r}; the output would mix two models' vectors: point "
            "--base-url at the server that serves the earlier model, or rerun with --restart"
        )
    state.runs[-1]["model_served"] = served


def _finalize(run: _Run, state: State) -> None:
    """Check the finished files against the input, rename them into place, write the manifest."""
    sink, checkpoint, total = run.sink, run.checkpoint, run.scanned.total
    if state.done != total:
        raise ResumeError(
            f"the checkpoint {checkpoint.state_path} says {state.done:,} passages are done but "
            f"the input has {total:,}; the output was not put in place: rerun with --restart "
            "to start over"
        )
    try:
        pairs = sink.finalize(state.done, state.dim)
        for staged, dest in pairs:
            if not staged.exists() and not dest.exists():
                raise ResumeError(
                    f"{staged} is missing and {dest} was not written; rerun with --restart"
                )
        checkpoint.check_built(sink, total, state.dim)
        manifest = manifest_for(run.spec.output)
        if manifest.exists():
            manifest.unlink()  # it describes the output about to be replaced
        for staged, dest in pairs:
            if staged.exists():
                refuse_link(dest)
                staged.replace(dest)
        write_atomic(manifest, _manifest(run, state))
        checkpoint.remove()
    except OSError as err:
        raise OutputError(f"cannot write {sink.output}: {err.strerror or err}") from None


def _manifest(run: _Run, state: State) -> bytes:
    """What the output holds and how it was made, for a reader to check their query side against."""
    from .. import __version__

    client = run.client
    return orjson.dumps(
        {
            "manifest_version": MANIFEST_VERSION,
            "package_version": __version__,
            "rows": state.done,
            "dimension": state.dim,
            "model": client.model,
            "model_served": served_model_of(state.runs),
            "base_url": client.base_url,
            "long_text": client.long_text,
            "long_text_applied": effective_long_text(client.model, client.long_text),
            "document_instruction": client.document_instruction,
            "query_instruction": client.query_instruction,
            "document_input_type": client.document_input_type,
            "query_input_type": client.query_input_type,
            "output_format": run.output_format,
            "dtype": run.identity.get("dtype"),
            "identity": run.identity,
            "usage": asdict(state.usage),
            "runs": state.runs,
            "on_error": run.spec.on_error,
            "errors": state.errors,
            "error_examples": state.error_examples,
        },
        option=orjson.OPT_INDENT_2,
    )
