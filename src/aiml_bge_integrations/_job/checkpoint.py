"""The job's checkpoint: one lock, one atomic state, one integrity check, for the CLI and Ray.

- **Lock** (``RunLock``): an OS lock on ``<output>.partial/lock``, held open until the run
  ends and dropped by the OS however it ends. Nothing in the work directory is read or
  deleted before it is held; a second run of the same output raises ``OutputBusyError``.
- **State** (``State``, ``Checkpoint.save``): ``state.json``, replaced in one step (temporary
  file, fsync, ``os.replace``), so a reader sees the old state or the new one, never half.
- **Integrity** (``Checkpoint.check_staged``, ``check_built``): a resumed run's staged files
  must hold exactly the rows its state says, and the finished output exactly the input's rows
  (and, for a matrix, its shape) before it is renamed into place; else ``ResumeError`` names
  the file and what it holds.
- **Only its own files**: the work directory is never reached through a symbolic link, and
  only the files the job names are deleted (``files``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..client import Usage
from ..errors import OutputBusyError, OutputError, ResumeError
from .files import make_dir, open_file, refuse_link, remove_dir, remove_files, write_atomic
from .plan import difference
from .sinks import Sink

__all__ = [
    "STATE_VERSION",
    "Checkpoint",
    "RunLock",
    "State",
    "UsageTotals",
    "check_rows",
    "saved_progress",
    "work_dir_for",
]

STATE_VERSION = 1
"""Version of ``state.json``'s layout."""
STATE_NAME = "state.json"
LOCK_NAME = "lock"
_RESTART_HINT = "rerun with --restart to start over"


def work_dir_for(output: Path) -> Path:
    """The staging directory of ``output``: ``<output>.partial`` next to it."""
    return output.with_name(output.name + ".partial")


@dataclass
class UsageTotals:
    """Requests, retries, tokens, credits and dollars of all the runs of one job together."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    credits: float = 0.0
    usd: float = 0.0

    def plus(self, usage: Usage) -> UsageTotals:
        """These totals with one client's ``usage`` added."""
        return UsageTotals(
            self.requests + usage.requests,
            self.retries + usage.retries,
            self.prompt_tokens + usage.prompt_tokens,
            self.credits + usage.credits,
            self.usd + usage.usd,
        )


@dataclass
class State:
    """A job's checkpoint: who it is (``identity``), how far it got, and what it staged."""

    identity: dict[str, Any]
    done: int = 0
    dim: int | None = None
    positions: dict[str, int] = field(default_factory=dict)
    usage: UsageTotals = field(default_factory=UsageTotals)
    phase: str = "embedding"
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Every run of the job: its ``model``, ``model_served``, ``base_url`` and ``resumed_from``
    (passages done)."""
    errors: int = 0
    """Rows written with an error instead of a vector (``--on-error record``)."""
    error_examples: list[list[Any]] = field(default_factory=list)
    """The first few of them: ``[id, error]``."""

    def dumps(self) -> bytes:
        """The checkpoint as JSON."""
        return orjson.dumps({"version": STATE_VERSION, **asdict(self)}, option=orjson.OPT_INDENT_2)

    @classmethod
    def loads(cls, raw: bytes) -> State:
        """A checkpoint from its JSON; ``ValueError``, ``KeyError`` or ``TypeError`` if it is not one."""
        data = orjson.loads(raw)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}")
        return cls(
            identity=data["identity"],
            done=int(data["done"]),
            dim=data["dim"],
            positions={k: int(v) for k, v in data["positions"].items()},
            usage=UsageTotals(**data["usage"]),
            phase=data["phase"],
            runs=list(data.get("runs", [])),  # absent from checkpoints of earlier versions
            errors=int(data.get("errors", 0)),
            error_examples=list(data.get("error_examples", [])),
        )


_LOCK_ATTEMPTS = 20


def _same_file(f: IO[bytes], path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class RunLock:
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
                make_dir(work)
                f = open_file(self.path, "a+b")
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
                try:
                    refuse_link(work)  # a link put in its place since make_dir looked
                except OutputError:
                    f.close()
                    raise
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


def saved_progress(work: Path) -> tuple[int, int] | None:
    """``(done, total)`` from the checkpoint in ``work``, or ``None`` if there is none."""
    try:
        with open_file(work / STATE_NAME, "rb") as f:
            state = State.loads(f.read())
        return state.done, int(state.identity["total"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_rows(what: str, rows: int | None, expected: int) -> None:
    """Raise ``ResumeError`` unless ``what`` holds ``expected`` rows."""
    if rows != expected:
        held = "a torn last row" if rows is None else f"{rows:,} rows"
        raise ResumeError(
            f"{what} holds {held} but the input has {expected:,} passages; the output was "
            f"not put in place: {_RESTART_HINT}"
        )


class Checkpoint:
    """One output's work directory, held under its lock, and the files the job keeps in it.

    ``names`` are the files the job creates there besides the state and the lock; they, the
    state and the lock are the only files it ever deletes.
    """

    def __init__(self, work: Path, output: Path, names: Iterable[str]) -> None:
        self.work = work
        self.output = output
        self.state_path = work / STATE_NAME
        self._names = (*names, STATE_NAME, STATE_NAME + ".tmp")
        self._lock = RunLock(work, output)

    def exists(self) -> bool:
        """Whether a state is saved."""
        return refuse_link(self.state_path)

    def load(self, identity: dict[str, Any]) -> State | None:
        """The saved state, if any; ``ResumeError`` if it is unreadable or not this run's."""
        if not self.exists():
            return None
        try:
            with open_file(self.state_path, "rb") as f:
                state = State.loads(f.read())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ResumeError(
                f"cannot read the checkpoint {self.state_path} ({err}); {_RESTART_HINT}"
            ) from None
        changed = difference(state.identity, identity)
        if changed:
            raise ResumeError(
                f"{self.work} holds an unfinished run that does not fit this command: "
                f"{'; '.join(changed)}. Run the command that started it (the same input and "
                "settings) to finish it, or pass --restart to discard it and start over"
            )
        return state

    def save(self, state: State, durable: bool = True) -> None:
        """Replace the saved state with ``state`` in one step."""
        write_atomic(self.state_path, state.dumps(), durable)

    def check_staged(self, sink: Sink, state: State) -> None:
        """Raise ``ResumeError`` unless every staged file holds exactly ``state.done`` rows."""
        rows = sink.staged_rows(state.positions, state.dim)
        wrong = {name: n for name, n in rows.items() if n != state.done}
        if wrong:
            held = ", ".join(
                f"{name} holds {'a torn last row' if n is None else f'{n:,} rows'}"
                for name, n in wrong.items()
            )
            raise ResumeError(
                f"the checkpoint {self.state_path} says {state.done:,} passages are done, but "
                f"{held} up to the length it gives; the checkpoint and the staged files "
                f"disagree, so the run cannot be resumed: {_RESTART_HINT}"
            )

    def check_built(self, sink: Sink, count: int, dim: int | None) -> None:
        """Raise ``ResumeError`` unless the finished files hold ``count`` rows of ``dim``."""
        problems = sink.check_built(count, dim)
        if problems:
            raise ResumeError(
                f"{'; '.join(problems)} (the input has {count:,} passages); the output was not "
                f"put in place: {_RESTART_HINT}"
            )

    def clear(self) -> None:
        """Delete the job's files in the work directory (the lock stays, held)."""
        remove_files(self.work, self._names)

    def remove(self) -> None:
        """Delete the job's files, the lock and the directory if nothing else is in it.

        Done while the lock is held (see ``RunLock``); files the job did not create stay.
        """
        with contextlib.suppress(OutputError):
            self.clear()
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                os.unlink(self._lock.path)
            remove_dir(self.work)

    def release(self) -> None:
        """Let the next run in."""
        self._lock.release()
