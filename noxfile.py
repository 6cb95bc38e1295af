"""The core of the test suite on every supported Python: ``make test-pythons`` (``nox -s core_tests``).

Each interpreter gets its own virtual environment under ``.nox/`` with the package installed
from this checkout (not editable) and the ``test`` extra: the local server and the pytest
plugins, no LangChain or LlamaIndex. It runs ``tests/unit`` and ``tests/core``, which cover the
request core over real HTTP against the local server; the whole suite runs on the main
interpreter in ``make test``.

Interpreters are found on ``PATH`` (``python3.10`` ...) or, failing that, under
``~/.pyenv/versions``. A missing interpreter fails the session: CI must not pass by skipping.
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
"""Kept in step with the classifiers and ``requires-python`` in pyproject.toml."""

nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


def _find_interpreters() -> None:
    """Put pyenv's builds of the wanted versions on PATH where only a pyenv shim (or nothing) is.

    A pyenv shim refuses to run a version that is not selected, so nox would not find it.
    """
    for version in PYTHONS:
        found = shutil.which(f"python{version}")
        if found and "/shims/" not in found:
            continue
        builds = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin")))
        if builds:
            os.environ["PATH"] = builds[-1] + os.pathsep + os.environ.get("PATH", "")


_find_interpreters()


@nox.session(python=PYTHONS)
def core_tests(session: nox.Session) -> None:
    """tests/unit and tests/core on one interpreter, against the installed package."""
    session.install(".[test]")
    # The interpreter is the one asked for, not whatever "python3" was found first.
    session.run(
        "python",
        "-c",
        "import sys; v = '%d.%d' % sys.version_info[:2]; print(sys.version); "
        f"assert v == {session.python!r}, v",
    )
    # Two workers, as in make test (pytest-xdist is in the test extra).
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/unit",
        "tests/core",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--dist",
        "loadgroup",
    )
