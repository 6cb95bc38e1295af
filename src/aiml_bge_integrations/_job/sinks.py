"""The job's sinks: staged output in the work directory, appended batch by batch, checked, renamed.

- ``JsonlSink``: ``{"id", "embedding"}`` per line; a row the server refused
  (``--on-error record``, a ``Refused`` in place of its vector) is ``{"id", "error"}``.
- ``NpySink``: a ``.npy`` float32/float64 matrix (its header written at the end into space
  kept for it) and an ``<stem>.ids.jsonl`` sidecar; it cannot hold a refused row.
- ``ParquetSink``: columns ``id`` and ``embedding`` (fixed-size lists), built at the end; with
  ``errors_column``, also ``error`` (null for a row with its vector, the reason for a refused
  row, whose ``embedding`` is null).

Each sink can count the rows it has staged up to given lengths (``staged_rows``) and check
what it built against the row count and vector length before it is renamed into place
(``check_built``): the checkpoint's integrity check uses both.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import OutputError, ResumeError
from .files import fsync, open_file, refuse_link
from .sources import PassageId

__all__ = [
    "JsonlSink",
    "NpySink",
    "ParquetSink",
    "Refused",
    "Row",
    "Sink",
    "ids_sidecar_for",
    "make_sink",
    "npy_header",
    "output_format_for",
]

_NPY_HEADER_BYTES = 128
_PARQUET_ROW_GROUP = 8192
_READ_CHUNK = 1 << 20


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


def ids_sidecar_for(output: Path) -> Path:
    """Where the ids of a ``.npy`` output go: ``<stem>.ids.jsonl`` next to it."""
    return output.with_name(output.stem + ".ids.jsonl")


def _open_staged(path: Path, position: int | None) -> IO[bytes]:
    """Open a staged file (``None``: new and empty), checking it reaches ``position``."""
    f = open_file(path, "r+b" if position is not None else "w+b")
    if position is not None:
        size = f.seek(0, os.SEEK_END)
        if size < position:
            f.close()
            raise ResumeError(
                f"{path} is shorter ({size} bytes) than its checkpoint says ({position}); "
                "the unfinished run cannot be resumed: rerun with --restart to start over"
            )
    return f


def _count_lines(f: IO[bytes], end: int | None = None) -> int | None:
    """Lines in the first ``end`` bytes of ``f`` (all of it by default); ``None`` if they end mid-line."""
    f.seek(0)
    left = f.seek(0, os.SEEK_END) if end is None else end
    f.seek(0)
    lines = 0
    last = b""
    while left > 0:
        chunk = f.read(min(_READ_CHUNK, left))
        if not chunk:
            return None
        lines += chunk.count(b"\n")
        left -= len(chunk)
        last = chunk[-1:]
    return lines if last in (b"", b"\n") else None


def _lines_in(path: Path) -> int | None:
    with open_file(path, "rb") as f:
        return _count_lines(f)


def _rows_problem(name: str, rows: int | None, count: int) -> list[str]:
    if rows == count:
        return []
    held = "a torn last row" if rows is None else f"{rows:,} rows"
    return [f"{name} holds {held}, not {count:,}"]


_END = object()


@dataclass(frozen=True)
class Refused:
    """In place of a row's vector: the server refused the passage (``--on-error record``)."""

    error: str
    """Why, as the error said it."""


Row = tuple[PassageId, "list[float] | Refused"]
"""One output row: the passage's id and its vector, or why it has none."""


def _next_id_matches(ids: Iterator[PassageId], value: Any) -> bool:
    expected = next(ids, _END)
    return expected is not _END and type(value) is type(expected) and value == expected


class Sink(ABC):
    """Staged output in the work directory, appended batch by batch, renamed into place at the end."""

    needs_dim = False
    """Whether a refused row can be written only once the vectors' length is known."""

    def __init__(self, work: Path, output: Path) -> None:
        self.work = work
        self.output = output
        self._files: dict[str, IO[bytes]] = {}
        self.recovered_errors: list[tuple[PassageId, str]] = []
        """The refused rows ``recover`` adopted, with their errors."""

    @property
    @abstractmethod
    def staged_names(self) -> tuple[str, ...]:
        """Names of the files this sink appends to, inside the work directory."""

    @property
    def owned_names(self) -> tuple[str, ...]:
        """Every file this sink may create in the work directory (the only ones it deletes)."""
        return self.staged_names

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

    @abstractmethod
    def staged_rows(self, positions: dict[str, int], dim: int | None) -> dict[str, int | None]:
        """Whole rows each open staged file holds up to its length in ``positions``.

        ``None`` for a file whose first ``positions[name]`` bytes are not whole rows.
        """

    def _existing(self, staged: Path, dest: Path) -> Path:
        # A rerun after a crash while finalizing finds some files already renamed.
        return staged if staged.exists() else dest

    @abstractmethod
    def check_built(self, count: int, dim: int | None) -> list[str]:
        """What is wrong with the finished files (after ``finalize``) for ``count`` rows of ``dim``.

        Empty when every file about to be renamed into place (or already there) holds
        exactly ``count`` rows and, for a matrix, the shape ``(count, dim)``.
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
    def write(self, rows: Sequence[Row], dim: int | None = None) -> None:
        """Append one batch of rows (``dim``: the vectors' length, for a refused row's place)."""

    @abstractmethod
    def vector_of(self, k: int) -> list[float]:
        """The vector of the ``k``-th row this sink has written since it was opened (from 0).

        Read back from the staged file, as written: writing it again writes the same bytes.
        """

    def sync(self, durable: bool = True) -> dict[str, int]:
        """Flush the staged files (and fsync them if ``durable``); returns each one's length."""
        positions = {}
        for name, f in self._files.items():
            if durable:
                fsync(f)
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

    def __init__(self, work: Path, output: Path) -> None:
        super().__init__(work, output)
        self._offsets: array[int] = array("q")

    def write(self, rows: Sequence[Row], dim: int | None = None) -> None:
        """Append one line per row."""
        f = self._files["part.jsonl"]
        lines = [
            orjson.dumps(
                {"id": i, "error": v.error} if isinstance(v, Refused) else {"id": i, "embedding": v}
            )
            + b"\n"
            for i, v in rows
        ]
        at = f.tell()
        for line in lines:
            self._offsets.append(at)
            at += len(line)
        f.write(b"".join(lines))

    def vector_of(self, k: int) -> list[float]:
        """The ``embedding`` of the ``k``-th line written, parsed back."""
        f = self._files["part.jsonl"]
        f.flush()
        f.seek(self._offsets[k])
        line = f.readline()
        f.seek(0, os.SEEK_END)
        vector: list[float] = orjson.loads(line)["embedding"]
        return vector

    def recover(
        self, positions: dict[str, int], ids: Iterator[PassageId], dim: int | None
    ) -> tuple[int, dict[str, int], int | None]:
        """Whole lines after the checkpoint whose ids come in input order."""
        f = self._files["part.jsonl"]
        end = positions["part.jsonl"]
        f.seek(end)
        count = 0
        self.recovered_errors = []
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                row = orjson.loads(line)
                refused = row.get("error") if "embedding" not in row else None
                vector = row["embedding"] if refused is None else None
            except (ValueError, TypeError, KeyError, AttributeError):
                break
            if isinstance(refused, str) and _next_id_matches(ids, row.get("id")):
                self.recovered_errors.append((row["id"], refused))
                count += 1
                end += len(line)
                continue
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

    def staged_rows(self, positions: dict[str, int], dim: int | None) -> dict[str, int | None]:
        """Lines of ``part.jsonl`` up to its checkpointed length."""
        return {"part.jsonl": _count_lines(self._files["part.jsonl"], positions["part.jsonl"])}

    def check_built(self, count: int, dim: int | None) -> list[str]:
        """The JSONL holds ``count`` whole lines."""
        path = self._existing(self.work / "part.jsonl", self.output)
        return _rows_problem(path.name, _lines_in(path), count)


class _MatrixSink(Sink):
    """Vectors as raw little-endian floats plus a JSONL file of ids; a subclass finishes them."""

    staged_names = ("vectors.bin", "ids.jsonl")
    needs_dim = True
    _header = 0

    def __init__(self, work: Path, output: Path, dtype: str) -> None:
        super().__init__(work, output)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
        self.dtype = dtype
        self._code = "f" if dtype == "float32" else "d"
        self._width = 4 if dtype == "float32" else 8
        self._first_at: int | None = None
        self._row_bytes = 0

    def _start(self) -> None:
        if self._header:
            self._files["vectors.bin"].write(b"\0" * self._header)

    def write(self, rows: Sequence[Row], dim: int | None = None) -> None:
        """Append the vectors and the ids (a refused row: zeros, and its error beside its id)."""
        if dim is None:
            dim = next((len(v) for _, v in rows if not isinstance(v, Refused)), None)
        if dim is None and rows:
            raise OutputError("a refused row cannot be written before the vectors' length is known")
        data: array[float] = array(self._code)
        ids: list[bytes] = []
        for i, vec in rows:
            if isinstance(vec, Refused):
                data.extend([0.0] * (dim or 0))
                ids.append(orjson.dumps({"id": i, "error": vec.error}) + b"\n")
            else:
                data.extend(vec)
                ids.append(orjson.dumps(i) + b"\n")
        if sys.byteorder == "big":
            data.byteswap()
        f = self._files["vectors.bin"]
        if self._first_at is None and rows:
            self._first_at = f.tell()
            self._row_bytes = (dim or 0) * self._width
        f.write(data.tobytes())
        self._files["ids.jsonl"].write(b"".join(ids))

    def vector_of(self, k: int) -> list[float]:
        """The ``k``-th vector written, read back at the width it was stored with."""
        f = self._files["vectors.bin"]
        f.flush()
        f.seek((self._first_at or 0) + k * self._row_bytes)
        data: array[float] = array(self._code, f.read(self._row_bytes))
        f.seek(0, os.SEEK_END)
        if sys.byteorder == "big":
            data.byteswap()
        return data.tolist()

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
        self.recovered_errors = []
        for line in f:
            if count >= rows or not line.endswith(b"\n"):
                break
            try:
                value = orjson.loads(line)
            except ValueError:
                break
            refused = _refused_id(value)
            if refused is not None:
                if not _next_id_matches(ids, refused[0]):
                    break
                self.recovered_errors.append(refused)
            elif not _next_id_matches(ids, value):
                break
            count += 1
            end_i += len(line)
        return count, {"vectors.bin": start_v + count * row, "ids.jsonl": end_i}, dim


def _refused_id(value: Any) -> tuple[PassageId, str] | None:
    """A refused row's id and error, from its line in ``ids.jsonl`` (``None``: not refused)."""
    if isinstance(value, dict) and isinstance(value.get("error"), str) and "id" in value:
        return value["id"], value["error"]
    return None


def _matrix_rows(span: int, dim: int | None, width: int) -> int | None:
    if dim is None or dim == 0:
        return 0 if span == 0 else None
    rows, rest = divmod(span, dim * width)
    return rows if rest == 0 else None


def _staged_matrix_rows(
    sink: _MatrixSink, positions: dict[str, int], dim: int | None
) -> dict[str, int | None]:
    return {
        "vectors.bin": _matrix_rows(positions["vectors.bin"] - sink._header, dim, sink._width),
        "ids.jsonl": _count_lines(sink._files["ids.jsonl"], positions["ids.jsonl"]),
    }


class NpySink(_MatrixSink):
    """A ``.npy`` matrix (header written at the end into space kept for it) and an ids sidecar."""

    _header = _NPY_HEADER_BYTES

    def write(self, rows: Sequence[Row], dim: int | None = None) -> None:
        """Append the vectors and the ids; a matrix has no place for a refused row."""
        if any(isinstance(v, Refused) for _, v in rows):
            raise OutputError(".npy output cannot hold a row without a vector")
        super().write(rows, dim)

    def finalize(self, count: int, dim: int | None) -> list[tuple[Path, Path]]:
        """Write the ``.npy`` header for ``(count, dim)`` in place."""
        staged = self.work / "vectors.bin"
        if staged.exists():
            header = npy_header(self.dtype, count, dim or 0)
            with open_file(staged, "r+b") as f:
                f.write(header)
                fsync(f)
        return self.finalize_targets()

    def staged_rows(self, positions: dict[str, int], dim: int | None) -> dict[str, int | None]:
        """Whole vectors after the header, and lines of ids, up to their checkpointed lengths."""
        return _staged_matrix_rows(self, positions, dim)

    def check_built(self, count: int, dim: int | None) -> list[str]:
        """The matrix's header says ``(count, dim)`` and its size fits; the sidecar has ``count`` ids."""
        (ids_staged, ids_dest), (staged, dest) = self.finalize_targets()
        problems = []
        matrix = self._existing(staged, dest)
        with open_file(matrix, "rb") as f:
            header = f.read(_NPY_HEADER_BYTES)
            size = f.seek(0, os.SEEK_END)
        expected = _NPY_HEADER_BYTES + count * (dim or 0) * self._width
        if header != npy_header(self.dtype, count, dim or 0) or size != expected:
            rows = _matrix_rows(size - _NPY_HEADER_BYTES, dim, self._width)
            held = "a torn last row" if rows is None else f"{rows:,} rows"
            problems.append(f"{matrix.name} holds {held} of {dim}, not ({count:,}, {dim})")
        ids = self._existing(ids_staged, ids_dest)
        return problems + _rows_problem(ids.name, _lines_in(ids), count)

    def finalize_targets(self) -> list[tuple[Path, Path]]:
        """``(staged, destination)`` of the sidecar and of the matrix."""
        return [
            (self.work / "ids.jsonl", ids_sidecar_for(self.output)),
            (self.work / "vectors.bin", self.output),
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

    def __init__(
        self, work: Path, output: Path, dtype: str, *, errors_column: bool = False
    ) -> None:
        super().__init__(work, output, dtype)
        self.errors_column = errors_column
        """Whether the file has an ``error`` column (``--on-error record``)."""
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

    @property
    def owned_names(self) -> tuple[str, ...]:
        """The staged files and the Parquet file built from them."""
        return (*self.staged_names, "final.parquet", "final.parquet.tmp")

    def staged_rows(self, positions: dict[str, int], dim: int | None) -> dict[str, int | None]:
        """Whole vectors and lines of ids up to their checkpointed lengths."""
        return _staged_matrix_rows(self, positions, dim)

    def check_built(self, count: int, dim: int | None) -> list[str]:
        """The Parquet file has ``count`` rows and an ``embedding`` column of ``dim`` values."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self._existing(self.work / "final.parquet", self.output)
        with open_file(path, "rb") as f:
            meta = pq.read_metadata(f)
            f.seek(0)
            schema = pq.read_schema(f)
        problems = _rows_problem(path.name, meta.num_rows, count)
        column = schema.field("embedding").type if "embedding" in schema.names else None
        if not (isinstance(column, pa.FixedSizeListType) and column.list_size == dim):
            problems.append(f"{path.name} has embedding {column}, not {dim} values a row")
        return problems

    def _build(self, target: Path, count: int, dim: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        float_type = pa.float32() if self.dtype == "float32" else pa.float64()
        width = 4 if self.dtype == "float32" else 8
        id_type: Any = None
        writer: Any = None
        tmp = target.with_name(target.name + ".tmp")
        with (
            open_file(self.work / "vectors.bin", "rb") as vf,
            open_file(self.work / "ids.jsonl", "rb") as idf,
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
                errors: list[str | None] = [None] * n
                for k, value in enumerate(ids):
                    refused = _refused_id(value)
                    if refused is not None:
                        ids[k], errors[k] = refused
                if id_type is None:
                    id_type = pa.int64() if ids and isinstance(ids[0], int) else pa.string()
                values = pa.Array.from_buffers(float_type, n * dim, [None, pa.py_buffer(raw)])
                mask = pa.array([e is not None for e in errors]) if any(errors) else None
                columns = {
                    "id": pa.array(ids, type=id_type),
                    "embedding": pa.FixedSizeListArray.from_arrays(values, dim, mask=mask),
                }
                if self.errors_column:
                    columns["error"] = pa.array(errors, type=pa.string())
                table = pa.table(columns)
                if writer is None:
                    tmp_file = open_file(tmp, "wb")
                    writer = pq.ParquetWriter(tmp_file, table.schema)
                writer.write_table(table, row_group_size=_PARQUET_ROW_GROUP)
                done += n
        if writer is None:
            raise OutputError(f"no vectors to write to {self.output}")
        writer.close()
        fsync(tmp_file)
        tmp_file.close()
        refuse_link(target)
        os.replace(tmp, target)


def make_sink(
    output_format: str,
    work: Path,
    output: Path,
    dtype: str = "float32",
    *,
    errors_column: bool = False,
) -> Sink:
    """The sink for ``output_format`` (``jsonl``, ``npy`` or ``parquet``).

    ``errors_column``: a Parquet file gets an ``error`` column (``--on-error record``).
    """
    if output_format == "jsonl":
        return JsonlSink(work, output)
    if output_format == "npy":
        return NpySink(work, output, dtype)
    if output_format == "parquet":
        return ParquetSink(work, output, dtype, errors_column=errors_column)
    raise ValueError(f"unknown output format {output_format!r}")
