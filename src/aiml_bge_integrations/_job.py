"""The embedding job behind ``aiml-bge embed``: passages in, vectors out, resumable.

Data flow::

    InputSource.records()  ->  EmbeddingsClient.iter_embeddings()  ->  Sink (staged files)
                                                                       -> rename into place

- **Input** (``open_source``): a text file (one passage per line, id = line number from 1,
  blank lines skipped), a JSONL file (text from ``field``, id from ``id_field`` or the line
  number), or a directory of ``.txt``/``.md`` files (one passage per file, id = path relative
  to the directory). Every record is checked in a first pass (``scan``) before anything is
  sent, so a bad line is reported, by number, without spending a credit. The same pass
  fingerprints the input (SHA-256) so a resumed run can tell that its input did not change.
- **Output** (``make_sink``): JSONL (``{"id", "embedding"}`` per line), ``.npy`` (a float32
  or float64 matrix) with an ``<stem>.ids.jsonl`` sidecar, or Parquet (columns ``id`` and
  ``embedding``, needs pyarrow). Everything is staged in ``<output>.partial/`` and renamed
  into place only when complete: a file at the output path is always a finished one.
- **Lock**: a run first takes an OS lock on ``<output>.partial/lock`` (``_RunLock``), held
  open until it ends and dropped by the OS however it ends. Nothing in the work directory is
  read or deleted before; a second run of the same output, ``restart`` or not, raises
  ``OutputBusyError`` having changed nothing.
- **Resume**: every batch is appended to the staged files as soon as it is back (in input
  order, so the staged files only ever grow by whole batches) and handed to the OS, which
  keeps it even if the process is killed the next instant. After each write, the passages
  written and each staged file's length after them change together, in one assignment;
  ``<output>.partial/state.json``, the checkpoint, saves that pair (temp file + ``os.replace``,
  both fsynced) every two seconds, at the end and on any failure, so its count and lengths
  always describe the same rows. A restarted run adopts the whole rows written after the
  checkpoint (checking that their ids come in input order), cuts off a row torn by a kill,
  skips the passages done, and carries on. No batch that was written is sent again or
  written twice, and the result is byte for byte that of an uninterrupted run. Batches in
  flight (at most ``2 * max_concurrency``) when the process died are sent again. The
  checkpoint lists every run of the job (model, base URL, passages done when it started).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import sys
import time
import warnings
from abc import ABC, abstractmethod
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

import orjson

from ._batching import LongTextWarning, effective_long_text
from ._settings import BGE_MAX_TOKENS, DEFAULT_MODEL
from .client import EmbeddingsClient, Usage
from .errors import AimlBgeError, InvalidInputError

__all__ = [
    "DryRunReport",
    "InputFileError",
    "InputSource",
    "JobResult",
    "JobSpec",
    "OutputBusyError",
    "OutputError",
    "Passage",
    "ResumeError",
    "ScanResult",
    "credits_for_request",
    "dry_run",
    "input_format_for",
    "make_sink",
    "open_source",
    "output_format_for",
    "run_job",
    "saved_progress",
    "scan",
    "work_dir_for",
]

PassageId = int | str
STATE_VERSION = 1
_EXAMPLES = 20
_SCAN_CHUNK = 1024
_NPY_HEADER_BYTES = 128
_PARQUET_ROW_GROUP = 8192
_STATE_SECONDS = 2.0
_TEXT_SUFFIXES = (".txt", ".md")


# -- errors ---------------------------------------------------------------------------------


class InputFileError(InvalidInputError):
    """The input cannot be read or has a bad record; the message names the file and line."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class OutputError(AimlBgeError):
    """The output (or its staging directory next to it) cannot be written."""


class ResumeError(AimlBgeError):
    """An unfinished run's state does not fit this command."""


class OutputBusyError(AimlBgeError):
    """Another run is writing the same output: it holds the lock of its work directory."""


# -- input ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """One passage to embed and the id its vector is stored under."""

    id: PassageId
    text: str


def input_format_for(path: Path) -> str:
    """``"dir"``, ``"jsonl"`` (``.jsonl``/``.ndjson``) or ``"text"`` (anything else)."""
    if path.is_dir():
        return "dir"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    return "text"


def _is_blank(text: str) -> bool:
    return not text or text.isspace()


class InputSource(ABC):
    """A readable collection of passages; ``records`` checks each one as it reads it."""

    kind: str
    """``"text"``, ``"jsonl"`` or ``"dir"``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def records(self, hasher: Any = None) -> Iterator[Passage]:
        """Every passage in order; feeds the raw bytes read to ``hasher`` when given."""

    def settings(self) -> dict[str, Any]:
        """What, besides the bytes, decides which passages and ids come out (for resume)."""
        return {"input_format": self.kind}

    @property
    def id_label(self) -> str:
        """What an id is, for messages: ``line``, ``file`` or ``id``."""
        return "line"

    def _error(self, line: int | None, what: str) -> InputFileError:
        where = f"{self.path} line {line}" if line is not None else str(self.path)
        return InputFileError(f"{where}: {what}", path=self.path, line=line)


def _decode_line(source: InputSource, raw: bytes, lineno: int) -> str:
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise source._error(
            lineno, f"not valid UTF-8 (byte {err.start + 1}); save the file as UTF-8"
        ) from None


def _lines(source: InputSource, hasher: Any) -> Iterator[tuple[int, bytes]]:
    try:
        f = source.path.open("rb")
    except OSError as err:
        raise source._error(None, f"cannot read: {err.strerror or err}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if hasher is not None:
                hasher.update(raw)
            yield lineno, raw.rstrip(b"\n").rstrip(b"\r")


class TextSource(InputSource):
    """One passage per line; the id is the line number (from 1); blank lines are skipped."""

    kind = "text"

    def records(self, hasher: Any = None) -> Iterator[Passage]:
        """Every non-blank line as a passage."""
        for lineno, raw in _lines(self, hasher):
            text = _decode_line(self, raw, lineno)
            if not _is_blank(text):
                yield Passage(lineno, text)


class JsonlSource(InputSource):
    """One JSON object per line: text from ``field``, id from ``id_field`` (or the line number)."""

    kind = "jsonl"

    def __init__(self, path: Path, field: str = "text", id_field: str | None = None) -> None:
        super().__init__(path)
        self.field = field
        self.id_field = id_field

    def settings(self) -> dict[str, Any]:
        """Input format and the two field names."""
        return {"input_format": self.kind, "field": self.field, "id_field": self.id_field}

    @property
    def id_label(self) -> str:
        """``line`` without ``id_field``, else ``id``."""
        return "line" if self.id_field is None else "id"

    def records(self, hasher: Any = None) -> Iterator[Passage]:
        """Every non-blank line, parsed and checked."""
        id_type: type | None = None
        id_line = 0
        for lineno, raw in _lines(self, hasher):
            if not raw.strip():
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                raise self._error(
                    lineno, f"not valid JSON at column {err.colno}: {err.msg}"
                ) from None
            if not isinstance(record, dict):
                raise self._error(
                    lineno,
                    f"expected a JSON object, got {type(record).__name__}; each line must be "
                    f'one object with a "{self.field}" field',
                )
            if self.field not in record:
                fields = ", ".join(sorted(record)[:10]) or "none"
                raise self._error(
                    lineno, f'no "{self.field}" field (fields: {fields}); choose one with --field'
                )
            text = record[self.field]
            if not isinstance(text, str):
                raise self._error(lineno, f'"{self.field}" is {type(text).__name__}, not a string')
            if _is_blank(text):
                raise self._error(
                    lineno,
                    f'"{self.field}" is empty or whitespace only, which cannot be embedded; '
                    "remove the line or give it text",
                )
            pid: PassageId = lineno
            if self.id_field is not None:
                if self.id_field not in record:
                    raise self._error(lineno, f'no "{self.id_field}" field for the id')
                value = record[self.id_field]
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise self._error(
                        lineno,
                        f'id "{self.id_field}" is {type(value).__name__}; ids must be strings or integers',
                    )
                if id_type is None:
                    id_type, id_line = type(value), lineno
                elif type(value) is not id_type:
                    raise self._error(
                        lineno,
                        f"id is {type(value).__name__} but line {id_line} had {id_type.__name__}; "
                        "ids must all be strings or all integers",
                    )
                pid = value
            yield Passage(pid, text)


class DirectorySource(InputSource):
    """Every ``.txt``/``.md`` file under a directory (hidden ones skipped), one passage each.

    The id is the path relative to the directory, with ``/`` separators; files come in the
    order of those ids.
    """

    kind = "dir"

    @property
    def id_label(self) -> str:
        """Ids are file paths."""
        return "file"

    def files(self) -> list[tuple[str, Path]]:
        """``(id, path)`` of every file, sorted by id."""
        found: list[tuple[str, Path]] = []
        for root, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.startswith(".") or not name.lower().endswith(_TEXT_SUFFIXES):
                    continue
                full = Path(root, name)
                found.append((full.relative_to(self.path).as_posix(), full))
        found.sort()
        return found

    def records(self, hasher: Any = None) -> Iterator[Passage]:
        """Each file's text."""
        files = self.files()
        if not files:
            raise self._error(None, "no .txt or .md files in this directory")
        for rel, full in files:
            try:
                raw = full.read_bytes()
            except OSError as err:
                raise InputFileError(
                    f"{full}: cannot read: {err.strerror or err}", path=full
                ) from None
            if hasher is not None:
                hasher.update(rel.encode("utf-8") + b"\0" + raw + b"\0")
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputFileError(
                    f"{full}: not valid UTF-8 (byte {err.start + 1}); save the file as UTF-8",
                    path=full,
                ) from None
            if _is_blank(text):
                raise InputFileError(
                    f"{full}: empty or whitespace only, which cannot be embedded; remove the "
                    "file or give it text",
                    path=full,
                )
            yield Passage(rel, text)


def open_source(
    path: Path, input_format: str = "auto", field: str = "text", id_field: str | None = None
) -> InputSource:
    """The ``InputSource`` for ``path``; ``input_format`` is ``auto``, ``text``, ``jsonl`` or ``dir``."""
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory", path=path)
    kind = input_format_for(path) if input_format == "auto" else input_format
    if kind != "jsonl" and (id_field is not None or field != "text"):
        raise ValueError(
            f"--field and --id-field apply to JSONL input, and {path} is read as {kind}: drop "
            "them, or pass --input-format jsonl"
        )
    if kind == "dir":
        if not path.is_dir():
            raise InputFileError(
                f"{path}: not a directory (--input-format dir); drop --input-format to read it "
                "as a file",
                path=path,
            )
        return DirectorySource(path)
    if path.is_dir():
        raise InputFileError(
            f"{path}: is a directory, not a {kind} file; drop --input-format to read every "
            ".txt/.md file in it",
            path=path,
        )
    if kind == "jsonl":
        return JsonlSource(path, field, id_field)
    if kind == "text":
        return TextSource(path)
    raise ValueError(f"unknown input format {input_format!r}")


# -- scanning and the dry run ---------------------------------------------------------------


@dataclass
class ScanResult:
    """What one checking pass over the input found."""

    total: int = 0
    """Passages."""
    fingerprint: str = ""
    """SHA-256 of the bytes read (for a directory: of each relative path and its contents)."""
    over_limit: int = 0
    """Passages over the model's token window (only counted for BGE models)."""
    over_examples: list[tuple[PassageId, int]] = field(default_factory=list)
    """The first few of them, with their token counts."""


def _chunks(records: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    chunk: list[Passage] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def scan(source: InputSource, *, check_long: bool) -> ScanResult:
    """Read every record once: count, fingerprint, and (``check_long``) find over-long passages.

    Only texts that could be over the window are tokenized (as the core does), so this pass
    is cheap for short passages.
    """
    hasher = hashlib.sha256()
    result = ScanResult()
    for chunk in _chunks(source.records(hasher), _SCAN_CHUNK):
        result.total += len(chunk)
        if check_long:
            from .tokens import truncate_texts

            over = truncate_texts([p.text for p in chunk], cut=False).over_limit
            result.over_limit += len(over)
            for i, n in over.items():
                if len(result.over_examples) < _EXAMPLES:
                    result.over_examples.append((chunk[i].id, n))
    result.fingerprint = hasher.hexdigest()
    return result


def credits_for_request(tokens: int) -> int:
    """Estimated credits for one request of ``tokens`` BGE tokens: ``max(1, ceil(tokens / 1000))``.

    The local server bills with this formula; it matches the one documented sample (7 tokens,
    1 credit). The AI/ML API publishes no formula, so treat it as an estimate.
    """
    return max(1, math.ceil(tokens / 1000))


@dataclass
class DryRunReport:
    """Token counts and estimates for a job, computed without sending anything."""

    total: int = 0
    """Passages."""
    tokens: int = 0
    """BGE tokens of every passage as written, ``[CLS]`` and ``[SEP]`` included."""
    billed_tokens: int = 0
    """Tokens after the long-text policy (over-long passages counted at 512 when truncated)."""
    max_tokens: int = 0
    """The longest passage, in tokens."""
    over_limit: int = 0
    """Passages over 512 tokens."""
    over_examples: list[tuple[PassageId, int]] = field(default_factory=list)
    """The first few of them, with their token counts."""
    long_text: str = "truncate"
    """The policy the run applies to them: the one asked for with a BGE model, else ``"none"``."""
    requests: int = 0
    """Requests at the given batch size."""
    credits: int = 0
    """Estimated credits: ``credits_for_request`` summed over the planned requests."""


def dry_run(
    source: InputSource,
    *,
    batch_size: int,
    long_text: str = "truncate",
    model: str = DEFAULT_MODEL,
) -> DryRunReport:
    """Count BGE tokens for every passage exactly and estimate requests and credits.

    Nothing is sent. Batches are planned as the real run plans them (``batch_size``
    consecutive passages per request), and each planned request is estimated with
    ``credits_for_request``. The long-text policy is applied as the run applies it, that is
    only for BGE models (``effective_long_text``).
    """
    from .tokens import count_tokens_batch

    report = DryRunReport(long_text=effective_long_text(model, long_text))
    batch_tokens = 0
    in_batch = 0
    for chunk in _chunks(source.records(), _SCAN_CHUNK):
        counts = count_tokens_batch([p.text for p in chunk])
        for passage, n in zip(chunk, counts, strict=True):
            report.total += 1
            report.tokens += n
            report.max_tokens = max(report.max_tokens, n)
            billed = n
            if n > BGE_MAX_TOKENS:
                report.over_limit += 1
                if len(report.over_examples) < _EXAMPLES:
                    report.over_examples.append((passage.id, n))
                if report.long_text == "truncate":
                    billed = BGE_MAX_TOKENS
            report.billed_tokens += billed
            batch_tokens += billed
            in_batch += 1
            if in_batch == batch_size:
                report.requests += 1
                report.credits += credits_for_request(batch_tokens)
                batch_tokens = in_batch = 0
    if in_batch:
        report.requests += 1
        report.credits += credits_for_request(batch_tokens)
    return report


# -- output ---------------------------------------------------------------------------------


def output_format_for(path: Path) -> str:
    """``"jsonl"``, ``"npy"`` or ``"parquet"`` from the suffix; raises ``ValueError`` otherwise."""
    suffix = path.suffix.lower()
    formats = {".jsonl": "jsonl", ".ndjson": "jsonl", ".npy": "npy", ".parquet": "parquet"}
    if suffix not in formats:
        raise ValueError(
            f"cannot tell the output format from {path.name!r}: use a .jsonl, .npy or .parquet "
            "name, or --output-format"
        )
    return formats[suffix]


def work_dir_for(output: Path) -> Path:
    """The staging directory of ``output``: ``<output>.partial`` next to it."""
    return output.with_name(output.name + ".partial")


def ids_sidecar_for(output: Path) -> Path:
    """Where the ids of a ``.npy`` output go: ``<stem>.ids.jsonl`` next to it."""
    return output.with_name(output.stem + ".ids.jsonl")


def _fsync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _open_staged(path: Path, position: int | None) -> IO[bytes]:
    """Open a staged file (``None``: new and empty), checking it reaches ``position``."""
    f = path.open("r+b" if position is not None else "w+b")
    if position is not None:
        size = f.seek(0, os.SEEK_END)
        if size < position:
            f.close()
            raise ResumeError(
                f"{path} is shorter ({size} bytes) than its checkpoint says ({position}); "
                "the unfinished run cannot be resumed: rerun with --restart to start over"
            )
    return f


_END = object()


def _next_id_matches(ids: Iterator[PassageId], value: Any) -> bool:
    expected = next(ids, _END)
    return expected is not _END and type(value) is type(expected) and value == expected


class Sink(ABC):
    """Staged output in the work directory, appended batch by batch, renamed into place at the end."""

    def __init__(self, work: Path, output: Path) -> None:
        self.work = work
        self.output = output
        self._files: dict[str, IO[bytes]] = {}

    @property
    @abstractmethod
    def staged_names(self) -> tuple[str, ...]:
        """Names of the files this sink appends to, inside the work directory."""

    def open(self, positions: dict[str, int] | None) -> None:
        """Open (or, without ``positions``, create) the staged files.

        After opening at a checkpoint, call ``recover`` and then ``cut``.
        """
        for name in self.staged_names:
            pos = None if positions is None else positions.get(name)
            if positions is not None and pos is None:
                raise ResumeError(
                    f"the checkpoint in {self.work} does not list {name}; the unfinished run "
                    "cannot be resumed: rerun with --restart to start over"
                )
            self._files[name] = _open_staged(self.work / name, pos)
        if positions is None:
            self._start()

    @abstractmethod
    def recover(
        self, positions: dict[str, int], ids: Iterator[PassageId], dim: int | None
    ) -> tuple[int, dict[str, int], int | None]:
        """Find the rows written after the checkpoint ``positions`` that are whole and in order.

        ``ids`` are the ids the rows after the checkpoint must have. Returns how many rows
        are good, the positions just after them, and the vector length (``dim`` or learnt).
        Whatever follows (a row cut short by a kill, anything unexpected) is to be cut off.
        """

    def cut(self, positions: dict[str, int]) -> None:
        """Truncate each staged file at ``positions`` and append from there."""
        for name, f in self._files.items():
            f.truncate(positions[name])
            f.seek(positions[name])

    def _start(self) -> None:
        """Write whatever a fresh staged file begins with (nothing by default)."""
        return None

    @abstractmethod
    def write(self, rows: list[tuple[PassageId, list[float]]]) -> None:
        """Append one batch of rows."""

    def sync(self, durable: bool = True) -> dict[str, int]:
        """Flush the staged files (and fsync them if ``durable``); returns each one's length."""
        positions = {}
        for name, f in self._files.items():
            if durable:
                _fsync(f)
            else:
                f.flush()
            positions[name] = f.tell()
        return positions

    def close(self) -> None:
        """Close the staged files."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    @abstractmethod
    def finalize(self, count: int, dim: int | None) -> list[tuple[Path, Path]]:
        """Complete the staged files; returns ``(staged, destination)`` pairs, renamed in order.

        Must be repeatable: after a crash during finalizing, a rerun calls it again, and files
        already renamed are no longer in the work directory.
        """


class JsonlSink(Sink):
    """``{"id": ..., "embedding": [...]}`` per line, floats as the server sent them."""

    staged_names = ("part.jsonl",)

    def write(self, rows: list[tuple[PassageId, list[float]]]) -> None:
        """Append one line per row."""
        self._files["part.jsonl"].write(
            b"".join(orjson.dumps({"id": i, "embedding": v}) + b"\n" for i, v in rows)
        )

    def recover(
        self, positions: dict[str, int], ids: Iterator[PassageId], dim: int | None
    ) -> tuple[int, dict[str, int], int | None]:
        """Whole lines after the checkpoint whose ids come in input order."""
        f = self._files["part.jsonl"]
        end = positions["part.jsonl"]
        f.seek(end)
        count = 0
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                row = orjson.loads(line)
                vector = row["embedding"]
            except (ValueError, TypeError, KeyError):
                break
            if not isinstance(vector, list) or not _next_id_matches(ids, row.get("id")):
                break
            if dim is None:
                dim = len(vector)
            if len(vector) != dim:
                break
            count += 1
            end += len(line)
        return count, {"part.jsonl": end}, dim

    def finalize(self, count: int, dim: int | None) -> list[tuple[Path, Path]]:
        """The staged JSONL is the output as it stands."""
        return [(self.work / "part.jsonl", self.output)]


class _MatrixSink(Sink):
    """Vectors as raw little-endian floats plus a JSONL file of ids; a subclass finishes them."""

    staged_names = ("vectors.bin", "ids.jsonl")
    _header = 0

    def __init__(self, work: Path, output: Path, dtype: str) -> None:
        super().__init__(work, output)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
        self.dtype = dtype
        self._code = "f" if dtype == "float32" else "d"
        self._width = 4 if dtype == "float32" else 8

    def _start(self) -> None:
        if self._header:
            self._files["vectors.bin"].write(b"\0" * self._header)

    def write(self, rows: list[tuple[PassageId, list[float]]]) -> None:
        """Append the vectors and the ids."""
        data: array[float] = array(self._code)
        for _, vec in rows:
            data.extend(vec)
        if sys.byteorder == "big":
            data.byteswap()
        self._files["vectors.bin"].write(data.tobytes())
        self._files["ids.jsonl"].write(b"".join(orjson.dumps(i) + b"\n" for i, _ in rows))

    def recover(
        self, positions: dict[str, int], ids: Iterator[PassageId], dim: int | None
    ) -> tuple[int, dict[str, int], int | None]:
        """Whole vectors after the checkpoint, as many as there are ids in order for them."""
        start_v, start_i = positions["vectors.bin"], positions["ids.jsonl"]
        if dim is None:  # no batch was ever checkpointed: the row length is unknown
            return 0, dict(positions), dim
        row = dim * self._width
        rows = (self._files["vectors.bin"].seek(0, os.SEEK_END) - start_v) // row
        f = self._files["ids.jsonl"]
        f.seek(start_i)
        count = 0
        end_i = start_i
        for line in f:
            if count >= rows or not line.endswith(b"\n"):
                break
            try:
                value = orjson.loads(line)
            except ValueError:
                break
            if not _next_id_matches(ids, value):
                break
            count += 1
            end_i += len(line)
        return count, {"vectors.bin": start_v + count * row, "ids.jsonl": end_i}, dim


class NpySink(_MatrixSink):
    """A ``.npy`` matrix (header written at the end into space kept for it) and an ids sidecar."""

    _header = _NPY_HEADER_BYTES

    def finalize(self, count: int, dim: int | None) -> list[tuple[Path, Path]]:
        """Write the ``.npy`` header for ``(count, dim)`` in place."""
        staged = self.work / "vectors.bin"
        if staged.exists():
            header = npy_header(self.dtype, count, dim or 0)
            with staged.open("r+b") as f:
                f.write(header)
                _fsync(f)
        return [
            (self.work / "ids.jsonl", ids_sidecar_for(self.output)),
            (staged, self.output),
        ]


def npy_header(dtype: str, rows: int, cols: int) -> bytes:
    """A version 1.0 ``.npy`` header of exactly 128 bytes for a C-order little-endian matrix."""
    descr = "<f4" if dtype == "float32" else "<f8"
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"
    pad = _NPY_HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise OutputError(
            f"a .npy header for shape ({rows}, {cols}) does not fit in {_NPY_HEADER_BYTES} "
            "bytes; write .parquet or .jsonl instead"
        )
    body = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class ParquetSink(_MatrixSink):
    """A Parquet file with columns ``id`` and ``embedding`` (fixed-size lists), built at the end."""

    def __init__(self, work: Path, output: Path, dtype: str) -> None:
        super().__init__(work, output, dtype)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise OutputError(
                "Parquet output needs pyarrow: pip install 'aiml-bge-integrations[parquet]'"
            ) from None

    def finalize(self, count: int, dim: int | None) -> list[tuple[Path, Path]]:
        """Convert the staged vectors and ids to Parquet, ``8192`` rows per row group."""
        built = self.work / "final.parquet"
        if (self.work / "vectors.bin").exists():
            self._build(built, count, dim or 0)
        return [(built, self.output)]

    def _build(self, target: Path, count: int, dim: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        float_type = pa.float32() if self.dtype == "float32" else pa.float64()
        width = 4 if self.dtype == "float32" else 8
        id_type: Any = None
        writer: Any = None
        tmp = target.with_name(target.name + ".tmp")
        with (
            (self.work / "vectors.bin").open("rb") as vf,
            (self.work / "ids.jsonl").open("rb") as idf,
        ):
            done = 0
            while done < count:
                n = min(_PARQUET_ROW_GROUP, count - done)
                raw = vf.read(n * dim * width)
                if len(raw) != n * dim * width:
                    raise OutputError(
                        f"{self.work / 'vectors.bin'} is shorter than its checkpoint says; "
                        "rerun with --restart to start over"
                    )
                if sys.byteorder == "big":
                    swapped = array("f" if width == 4 else "d", raw)
                    swapped.byteswap()
                    raw = swapped.tobytes()
                ids = [orjson.loads(idf.readline()) for _ in range(n)]
                if id_type is None:
                    id_type = pa.int64() if ids and isinstance(ids[0], int) else pa.string()
                values = pa.Array.from_buffers(float_type, n * dim, [None, pa.py_buffer(raw)])
                table = pa.table(
                    {
                        "id": pa.array(ids, type=id_type),
                        "embedding": pa.FixedSizeListArray.from_arrays(values, dim),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table, row_group_size=_PARQUET_ROW_GROUP)
                done += n
        if writer is None:
            raise OutputError(f"no vectors to write to {self.output}")
        writer.close()
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)


def make_sink(output_format: str, work: Path, output: Path, dtype: str = "float32") -> Sink:
    """The sink for ``output_format`` (``jsonl``, ``npy`` or ``parquet``)."""
    if output_format == "jsonl":
        return JsonlSink(work, output)
    if output_format == "npy":
        return NpySink(work, output, dtype)
    if output_format == "parquet":
        return ParquetSink(work, output, dtype)
    raise ValueError(f"unknown output format {output_format!r}")


# -- state ----------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        if durable:
            _fsync(f)
    os.replace(tmp, path)


@dataclass
class _UsageTotals:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    credits: float = 0.0
    usd: float = 0.0

    def plus(self, usage: Usage) -> _UsageTotals:
        return _UsageTotals(
            self.requests + usage.requests,
            self.retries + usage.retries,
            self.prompt_tokens + usage.prompt_tokens,
            self.credits + usage.credits,
            self.usd + usage.usd,
        )


@dataclass
class _State:
    identity: dict[str, Any]
    done: int = 0
    dim: int | None = None
    positions: dict[str, int] = field(default_factory=dict)
    usage: _UsageTotals = field(default_factory=_UsageTotals)
    phase: str = "embedding"
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Every run of the job: its ``model``, ``base_url`` and ``resumed_from`` (passages done)."""

    def dumps(self) -> bytes:
        return orjson.dumps({"version": STATE_VERSION, **asdict(self)}, option=orjson.OPT_INDENT_2)

    @classmethod
    def loads(cls, raw: bytes) -> _State:
        data = orjson.loads(raw)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}")
        return cls(
            identity=data["identity"],
            done=int(data["done"]),
            dim=data["dim"],
            positions={k: int(v) for k, v in data["positions"].items()},
            usage=_UsageTotals(**data["usage"]),
            phase=data["phase"],
            runs=list(data.get("runs", [])),  # absent from checkpoints of earlier versions
        )


_LOCK_ATTEMPTS = 20


def _same_file(f: IO[bytes], path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class _RunLock:
    """The lock of one output's run: an OS lock on ``<work>/lock``, held open for the whole run.

    The OS drops the lock when the process ends, however it ends (a kill, a crash), so nothing
    is left behind to clean up by hand. Taking it creates the work directory and an empty
    lock file if they are missing, and nothing else.

    The holder deletes the work directory, lock file included, while it still holds the lock
    (POSIX allows deleting an open file). A run that opened the old file just before and gets
    its lock just after finds that the path no longer names the file it locked, and tries
    again. POSIX: ``fcntl.flock``. Windows: ``msvcrt.locking`` on the first byte; an open file
    cannot be deleted there, so the holder removes the lock file after releasing it, which
    fails harmlessly if another run has it open by then.
    """

    def __init__(self, work: Path, output: Path) -> None:
        self.path = work / "lock"
        busy = OutputBusyError(
            f"another aiml-bge embed is writing {output} (it holds the lock {self.path}); "
            "wait for it to finish or stop it, then run this command again"
        )
        for _ in range(_LOCK_ATTEMPTS):
            try:
                work.mkdir(exist_ok=True)
                f = self.path.open("a+b")
            except FileNotFoundError:
                continue  # the holder removed the directory in between: start again
            except OSError as err:
                raise OutputError(f"cannot write {work}: {err.strerror or err}") from None
            try:
                locked = _lock_file(f)
            except OSError as err:
                f.close()
                raise OutputError(
                    f"cannot lock {self.path}: {err.strerror or err}; write the output to a "
                    "local file system"
                ) from None
            if not locked:
                f.close()
                raise busy
            if _same_file(f, self.path):
                self._f = f
                return
            f.close()  # locked a file its holder had already deleted
        raise busy

    def release(self) -> None:
        """Let the next run in (and on Windows, remove what the holder could not)."""
        _unlock_file(self._f)
        self._f.close()
        if sys.platform == "win32":
            with contextlib.suppress(OSError):
                self.path.unlink()
                self.path.parent.rmdir()


if sys.platform == "win32":  # pragma: no cover - not run on the CI's Linux
    import msvcrt

    def _lock_file(f: IO[bytes]) -> bool:
        f.seek(0)
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock_file(f: IO[bytes]) -> None:
        f.seek(0)
        with contextlib.suppress(OSError):
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_file(f: IO[bytes]) -> bool:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock_file(f: IO[bytes]) -> None:
        return None  # closing the file drops the lock, and nothing can come in between


# -- the job --------------------------------------------------------------------------------


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
    """Every run of the job, this one last: ``model``, ``base_url`` and ``resumed_from``."""


Progress = Callable[[int, int, Usage], None]
"""``progress(done, total, usage_this_run)``, called after every checkpoint."""
Notice = Callable[[str], None]


def _check_output(spec: JobSpec) -> None:
    out = spec.output
    parent = out.parent
    if not parent.exists():
        raise OutputError(f"cannot write {out}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: {parent} is not a directory")
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a directory")
    if out.exists() and spec.input.exists() and out.resolve() == spec.input.resolve():
        raise OutputError(f"the output {out} is the input: choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: directory {parent} is not writable")


def _check_overwrite(spec: JobSpec, work: Path) -> None:
    """Refuse to replace a finished output, unless asked to or resuming the run that writes it."""
    resumable = (work / "state.json").exists() and not spec.restart
    if spec.output.exists() and not spec.overwrite and not resumable:
        raise OutputError(f"{spec.output} exists; pass --overwrite to replace it")


def _clear_work_dir(work: Path) -> None:
    """Delete everything in the work directory but the lock (held by this run)."""
    try:
        for entry in work.iterdir():
            if entry.name != "lock":
                entry.unlink() if entry.is_file() else shutil.rmtree(entry)
    except OSError as err:
        raise OutputError(f"cannot write {work}: {err.strerror or err}") from None


def saved_progress(work: Path) -> tuple[int, int] | None:
    """``(done, total)`` from the checkpoint in ``work``, or ``None`` if there is none."""
    try:
        state = _State.loads((work / "state.json").read_bytes())
        return state.done, int(state.identity["total"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_state(work: Path, identity: dict[str, Any]) -> _State | None:
    path = work / "state.json"
    if not path.exists():
        return None
    try:
        state = _State.loads(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResumeError(
            f"cannot read the checkpoint {path} ({err}); rerun with --restart to start over"
        ) from None
    changed = [_difference(k, state.identity.get(k), identity[k]) for k in identity]
    if any(changed):
        raise ResumeError(
            f"{work} holds an unfinished run that does not fit this command: "
            f"{'; '.join(c for c in changed if c)}. Run the command that started it (the same "
            "input and settings) to finish it, or pass --restart to discard it and start over"
        )
    return state


def _difference(key: str, before: Any, now: Any) -> str:
    """What differs between an unfinished run's identity and this command's, said for a user."""
    if before == now:
        return ""
    if key == "fingerprint":
        return "the input's contents changed (its SHA-256 fingerprint differs)"
    if key == "total":
        return f"the input has {now} passages, the unfinished run's had {before}"
    return f"{key} is {now!r}, the unfinished run's was {before!r}"


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
    over-long passages then too, naming them. Raises ``InputFileError``, ``OutputError``,
    ``OutputBusyError``, ``ResumeError``, or the core's errors; on any failure the last
    checkpoint stays in the work directory and the same call continues from it.
    """
    say = notice or (lambda _msg: None)
    started = time.monotonic()
    output_format = (
        output_format_for(spec.output) if spec.output_format == "auto" else spec.output_format
    )
    work = work_dir_for(spec.output)
    _check_output(spec)
    # Before anything in the work directory is read or deleted.
    lock = _RunLock(work, spec.output)
    try:
        _check_overwrite(spec, work)
        source = open_source(spec.input, spec.input_format, spec.field, spec.id_field)
        client = make_client()
        try:
            return _run_checked(spec, source, client, output_format, work, progress, say, started)
        finally:
            client.close()
    except BaseException:
        saved = saved_progress(work)
        if saved is None or saved[0] == 0:
            # Nothing worth resuming: leave no staging directory behind.
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        lock.release()


def _run_checked(
    spec: JobSpec,
    source: InputSource,
    client: EmbeddingsClient,
    output_format: str,
    work: Path,
    progress: Progress | None,
    say: Notice,
    started: float,
) -> JobResult:
    long_text = effective_long_text(client.model, client.long_text)
    scanned = scan(source, check_long=long_text != "none")
    if scanned.total == 0:
        raise InputFileError(
            f"{spec.input}: no passages to embed (every line is blank)", path=spec.input
        )
    if scanned.over_limit and long_text == "error":
        label = source.id_label
        named = ", ".join(f"{label} {i} ({n} tokens)" for i, n in scanned.over_examples)
        more = scanned.over_limit - len(scanned.over_examples)
        raise InputFileError(
            f"{spec.input}: {scanned.over_limit} passage(s) exceed the {BGE_MAX_TOKENS}-token "
            f"window of {client.model}: {named}{f' and {more} more' if more > 0 else ''}; "
            "split them, or use --long-text truncate",
            path=spec.input,
        )
    if scanned.over_limit:
        say(
            f"{scanned.over_limit} passage(s) over {BGE_MAX_TOKENS} tokens will be truncated "
            f"to fit ({source.id_label} "
            f"{', '.join(str(i) for i, _ in scanned.over_examples[:5])}"
            f"{' ...' if scanned.over_limit > 5 else ''})"
        )
    identity = {
        **source.settings(),
        "input": str(spec.input.resolve()),
        "fingerprint": scanned.fingerprint,
        "total": scanned.total,
        "model": client.model,
        "long_text": client.long_text,
        "output_format": output_format,
        "dtype": spec.dtype if output_format != "jsonl" else None,
    }
    if spec.restart:
        _clear_work_dir(work)
    return _run_locked(
        spec, source, client, scanned, identity, output_format, work, progress, say, started
    )


def _run_locked(
    spec: JobSpec,
    source: InputSource,
    client: EmbeddingsClient,
    scanned: ScanResult,
    identity: dict[str, Any],
    output_format: str,
    work: Path,
    progress: Progress | None,
    say: Notice,
    started: float,
) -> JobResult:
    state = _load_state(work, identity)
    resumed = state is not None
    if state is None:
        _clear_work_dir(work)
        state = _State(identity)
    state_path = work / "state.json"
    sink = make_sink(output_format, work, spec.output, spec.dtype)
    total = scanned.total
    if state.phase == "embedding":
        try:
            sink.open(state.positions if resumed else None)
        except OSError as err:
            raise OutputError(f"cannot write {work}: {err.strerror or err}") from None
        try:
            if resumed:
                _recover(source, sink, state)
            else:
                state.positions = sink.sync()
            _record_run(state, client, say, total)
            _write_atomic(state_path, state.dumps())
            resumed_from = state.done
            _embed_rest(source, client, sink, state, state_path, total, progress)
        finally:
            sink.close()
        state.phase = "finalizing"
        _write_atomic(state_path, state.dumps())
    else:
        _record_run(state, client, say, total)
        resumed_from = state.done
    _finalize(sink, state, work)
    total_usage = asdict(state.usage)
    return JobResult(
        output=spec.output,
        sidecar=ids_sidecar_for(spec.output) if output_format == "npy" else None,
        total=total,
        dim=state.dim,
        resumed_from=resumed_from,
        usage=client.usage,
        total_usage=total_usage,
        seconds=time.monotonic() - started,
        over_limit=scanned.over_limit,
        runs=state.runs,
    )


def _record_run(state: _State, client: EmbeddingsClient, say: Notice, total: int) -> None:
    """Add this run to the job's record; say so when it resumes another's work elsewhere."""
    earlier = {run["base_url"] for run in state.runs} - {client.base_url}
    state.runs.append(
        {"model": client.model, "base_url": client.base_url, "resumed_from": state.done}
    )
    if state.done:
        at = f" at {', '.join(sorted(earlier))}; this run sends to {client.base_url}"
        say(
            f"resuming: {state.done:,} of {total:,} passages were done by an earlier run"
            f"{at if earlier else ''}"
        )


def _recover(source: InputSource, sink: Sink, state: _State) -> None:
    """Adopt the rows written after the last checkpoint (up to a kill); cut off any torn tail."""
    ids = (p.id for p in islice(source.records(), state.done, None))
    extra, positions, dim = sink.recover(state.positions, ids, state.dim)
    sink.cut(positions)
    state.done += extra
    state.dim = dim
    state.positions = positions


def _embed_rest(
    source: InputSource,
    client: EmbeddingsClient,
    sink: Sink,
    state: _State,
    state_path: Path,
    total: int,
    progress: Progress | None,
) -> None:
    ids: deque[PassageId] = deque()

    def texts() -> Iterator[str]:
        for passage in islice(source.records(), state.done, None):
            ids.append(passage.id)
            yield passage.text

    # Batches are ``chunk`` consecutive passages from where this run starts: writing after
    # every ``chunk`` vectors writes whole batches.
    chunk = client.effective_batch_size
    base = state.usage
    # What is written: passages done, and each staged file's length just after them. Both
    # change in one assignment, after a batch is written: interrupted before it, the pair is
    # the old one and the next run finds the batch after it and adopts it (checking its ids);
    # after it, the new one. A checkpoint saves this pair, so no run sees a batch twice.
    mark: tuple[int, dict[str, int]] = (state.done, dict(state.positions))
    rows: list[tuple[PassageId, list[float]]] = []
    last_save = time.monotonic()
    dim_saved = state.dim is not None

    def save() -> None:
        sink.sync(durable=True)
        state.done, state.positions = mark
        state.usage = base.plus(client.usage)
        _write_atomic(state_path, state.dumps())

    def write(batch: list[tuple[PassageId, list[float]]]) -> None:
        nonlocal mark
        sink.write(batch)
        mark = (mark[0] + len(batch), sink.sync(durable=False))

    def checkpoint() -> None:
        nonlocal last_save, dim_saved
        # Each batch goes to the OS at once (a killed process loses none of it: the next run
        # adopts whole rows past the checkpoint). The checkpoint itself, fsynced, costs
        # milliseconds, so it is renewed every few seconds, at the end, and on any failure.
        now = time.monotonic()
        if not dim_saved or mark[0] == total or now - last_save >= _STATE_SECONDS:
            save()
            last_save = now
            dim_saved = True
        if progress is not None:
            progress(mark[0], total, client.usage)

    if progress is not None:
        progress(mark[0], total, client.usage)
    try:
        with warnings.catch_warnings():
            # Over-long passages were counted and announced by the scan, once.
            warnings.simplefilter("ignore", LongTextWarning)
            for vector in client.iter_embeddings(texts()):
                if state.dim is None:
                    state.dim = len(vector)
                elif len(vector) != state.dim:
                    raise OutputError(
                        f"the server returned a {len(vector)}-d vector after {state.dim}-d "
                        "ones; the server or its model changed during the run: rerun with "
                        "--restart once it answers with one model"
                    )
                rows.append((ids.popleft(), vector))
                if len(rows) == chunk:
                    batch, rows = rows, []  # from here these rows are the write's to make
                    write(batch)
                    checkpoint()
            if rows:
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
    state.done, state.positions = mark


def _finalize(sink: Sink, state: _State, work: Path) -> None:
    try:
        pairs = sink.finalize(state.done, state.dim)
        for staged, dest in pairs:
            if staged.exists():
                os.replace(staged, dest)
            elif not dest.exists():
                raise ResumeError(
                    f"{staged} is missing and {dest} was not written; rerun with --restart"
                )
        shutil.rmtree(work, ignore_errors=True)
    except OSError as err:
        raise OutputError(f"cannot write {sink.output}: {err.strerror or err}") from None
