"""The core of the test suite on every supported Python, and the adapters on both ends of the
frameworks' ranges.

``nox -s core_tests`` (``make test-pythons``): each interpreter gets its own virtual
environment under ``.nox/`` with the package installed from this checkout (not editable) and
the ``test`` extra: the local server and the pytest plugins, no LangChain or LlamaIndex. It
runs ``tests/unit`` and ``tests/core``, which cover the request core over real HTTP against
the local server; the whole suite runs on the main interpreter in ``make test``.

``nox -s frameworks``: the adapters' tests with the lowest and with the newest version of
langchain-core and llama-index-core that ``pyproject.toml`` allows (the lowest read from the
extras there, so the floors cannot drift from what is tested).

Interpreters are found on ``PATH`` (``python3.10`` ...) or, failing that, under
``~/.pyenv/versions``. A missing interpreter fails the session: CI must not pass by skipping.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from pathlib import Path

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


FRAMEWORKS = ("langchain-core", "llama-index-core")
"""The frameworks the adapters build on, each with a range in pyproject.toml's extras."""

FRAMEWORK_TESTS = [
    "tests/langchain",
    "tests/llama_index",
    "tests/test_settings_agreement.py",
    "tests/test_copies_keep_their_key.py",
    "tests/test_warnings_at_the_users_line.py",
    # What needs more than the framework itself: notebooks (a Jupyter kernel), vector stores
    # and caches (langchain-classic), LangChain's standard suite (langchain-tests, which
    # follows the newest langchain-core). make test runs them with the newest versions.
    "--ignore=tests/langchain/test_langchain_notebook.py",
    "--ignore=tests/llama_index/test_notebook.py",
    "--ignore=tests/langchain/test_langchain_e2e.py",
    "--ignore=tests/langchain/test_langchain_standard.py",
]


def framework_ranges() -> dict[str, tuple[str, str]]:
    """``{framework: (lowest, below)}`` as pyproject.toml's extras declare them."""
    text = (Path(__file__).parent / "pyproject.toml").read_text(encoding="utf-8")
    ranges = {}
    for name in FRAMEWORKS:
        found = re.search(rf'"{re.escape(name)}>=([0-9.]+),<([0-9.]+)"', text)
        if found is None:
            raise RuntimeError(f"pyproject.toml declares no '>=X,<Y' range for {name}")
        ranges[name] = (found.group(1), found.group(2))
    return ranges


@nox.session(python="3.11")
@nox.parametrize("end", ["lowest", "newest"])
def frameworks(session: nox.Session, end: str) -> None:
    """The adapters' tests with the lowest, or the newest, allowed version of each framework."""
    ranges = framework_ranges()
    if end == "lowest":
        pins = [f"{name}=={low}" for name, (low, _) in ranges.items()]
    else:
        pins = [f"{name}>={low},<{below}" for name, (low, below) in ranges.items()]
    session.install(".[test,langchain,llama-index]", *pins)
    # Installed, not merely asked for: print the versions the tests run with.
    session.run(
        "python",
        "-c",
        f"from importlib.metadata import version; print({{n: version(n) for n in {FRAMEWORKS!r}}})",
    )
    session.run("python", "-m", "pytest", *FRAMEWORK_TESTS, "-q", "-p", "no:cacheprovider")
