"""The job's readers: a text file, a JSONL file or a directory of files, as ``Passage`` records.

Every record is checked as it is read (UTF-8, JSON, the text and id fields), and an error
names the file and the line, so a bad record is reported before anything is sent.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import InputFileError

__all__ = [
    "DirectorySource",
    "InputSource",
    "JsonlSource",
    "Passage",
    "PassageId",
    "TextSource",
    "input_format_for",
    "open_source",
]

PassageId = int | str
"""A passage's id: its line number, its JSONL id, or its file's relative path."""
_TEXT_SUFFIXES = (".txt", ".md")


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
