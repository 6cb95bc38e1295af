"""File operations of the job that never follow a symbolic link, and never touch what is not theirs.

Everything the job creates, writes or deletes (its work directory, the staged files, the
checkpoint, the lock, the output) goes through these functions: a link where one of them
should be is refused with ``OutputError`` naming it, so a link planted at
``out.jsonl.partial`` cannot make the job write into, or delete from, the directory it points
to. Files are deleted one by one, by the names the job gave them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from ..errors import OutputError

__all__ = [
    "fsync",
    "make_dir",
    "open_file",
    "refuse_link",
    "remove_dir",
    "remove_files",
    "write_atomic",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BASE_FLAGS = _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_MODES = {
    "rb": os.O_RDONLY,
    "r+b": os.O_RDWR,
    "w+b": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a+b": os.O_RDWR | os.O_CREAT,
}


def _link_error(path: Path) -> OutputError:
    return OutputError(
        f"{path} is a symbolic link; the job never writes or deletes through a link: remove "
        "the link, or choose another output path"
    )


def refuse_link(path: Path) -> bool:
    """Raise ``OutputError`` if ``path`` is a symbolic link; ``True`` if anything is there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(path)
    return True


def open_file(path: Path, mode: str) -> IO[bytes]:
    """Open ``path`` in ``mode`` (``rb``, ``r+b``, ``w+b``, ``wb``, ``a+b``) without following a link.

    ``a+b`` creates the file if it is missing and keeps what it holds (for the lock).
    """
    refuse_link(path)  # where the OS has no O_NOFOLLOW; harmless where it has
    try:
        fd = os.open(path, _MODES[mode] | _BASE_FLAGS, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise
    f = os.fdopen(fd, mode if mode != "a+b" else "r+b")
    if mode == "a+b":
        f.seek(0, os.SEEK_END)
    return f


def fsync(f: IO[bytes]) -> None:
    """Flush ``f`` and hand it to the disk."""
    f.flush()
    os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old or the new, never half.

    A link at ``path`` is refused, not replaced or followed.
    """
    refuse_link(path)
    tmp = path.with_name(path.name + ".tmp")
    with open_file(tmp, "wb") as f:
        f.write(data)
        if durable:
            fsync(f)
    os.replace(tmp, path)


def make_dir(path: Path) -> None:
    """Create the directory ``path`` if it is missing; refuse a link or a file there."""
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    refuse_link(path)
    if not path.is_dir():
        raise OutputError(f"cannot write {path}: it exists and is not a directory")


def remove_files(directory: Path, names: Iterable[str]) -> None:
    """Delete the files ``names`` in ``directory``, those that are there (a link is removed, not followed)."""
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise OutputError(f"cannot delete {directory / name}: {err.strerror or err}") from None


def remove_dir(directory: Path) -> bool:
    """Remove ``directory`` if it is empty (and not a link); ``False`` if it holds anything else."""
    try:
        if stat.S_ISLNK(os.lstat(directory).st_mode):
            return False
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
