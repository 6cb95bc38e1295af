"""Warnings at the user's line, not the package's.

Python files a warning under the line it is attributed to, and its default filter shows a
warning once per line: attributed to a line of this package, every warning of one kind would
show once per process, whatever the user's calls. ``warn_user`` attributes it to the first
frame that is neither this package nor a framework that calls into its adapters (LangChain,
LlamaIndex): the line in the user's code that made the call. Two calls from two lines give
two warnings.

Where the stack reaches the standard library's event loop or thread machinery before such a
frame (the warning comes from a worker thread, or from an asyncio task that a framework
started, as LlamaIndex's async batch does for each chunk), the caller's line is not on the
stack: what lies below is whoever started the loop or the thread. The warning is then
attributed to the first frame outside this package and shown every time: without the user's
line, showing it once would hide all but the first.

Pure: it imports nothing that does I/O, and reads no framework (it looks for the frameworks
only among the modules already imported).
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import warnings
from types import FrameType

__all__ = ["warn_user"]


def _dir_prefix(path: str) -> str:
    return os.path.join(os.path.dirname(path), "")


_PACKAGE = (_dir_prefix(__file__), _dir_prefix(os.path.abspath(__file__)))
"""This package's directory, as its frames name their files."""

_STDLIB = os.path.dirname(threading.__file__)
_MACHINERY = (
    os.path.join(_STDLIB, "asyncio", ""),
    os.path.join(_STDLIB, "concurrent", ""),
    threading.__file__,
)
"""The standard library that runs calls for someone else (event loops, thread pools): the
frames below it did not make the call."""

_FRAMEWORKS = ("langchain_core", "langchain", "llama_index", "llama_index_instrumentation")
"""Packages whose frames lie between the user's call and an adapter's methods."""


def _framework_prefixes() -> tuple[str, ...]:
    prefixes: list[str] = []
    for name in _FRAMEWORKS:
        module = sys.modules.get(name)  # only what is imported already: nothing is imported here
        for path in getattr(module, "__path__", None) or ():
            prefixes.append(os.path.join(path, ""))
    return tuple(prefixes)


def _user_level(skipped: tuple[str, ...]) -> int | None:
    """The ``stacklevel`` of the first frame not in ``skipped``, for a caller of ``warn_user``.

    None when the stack reaches an event loop or a thread's start before it.
    """
    frame: FrameType | None = inspect.currentframe()
    level = 0  # this function's own frame, then warn_user's (stacklevel 1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_MACHINERY):
            return None
        if not filename.startswith(skipped):
            return level
        frame = frame.f_back
        level += 1
    return None


def _outside_package() -> tuple[str, int, FrameType] | None:
    frame: FrameType | None = inspect.currentframe()
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    if frame is None:
        return None
    return frame.f_code.co_filename, frame.f_lineno, frame


def warn_user(message: str, category: type[Warning]) -> None:
    """Warn with ``category``, attributed to the user's calling line (see the module docstring)."""
    skipped = _PACKAGE + _framework_prefixes()
    level = _user_level(skipped)
    if level is not None:
        if sys.version_info >= (3, 12):
            warnings.warn(message, category, skip_file_prefixes=skipped)
        else:
            warnings.warn(message, category, stacklevel=level)
        return
    outside = _outside_package()
    if outside is None:
        warnings.warn(message, category, stacklevel=2)
        return
    filename, lineno, frame = outside
    module = frame.f_globals.get("__name__", "<unknown>")
    # A registry of its own: without the user's line, every occurrence is shown.
    warnings.warn_explicit(
        message,
        category,
        filename,
        lineno,
        module=module,
        registry={},
        module_globals=frame.f_globals,
    )
    del frame
