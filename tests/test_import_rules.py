"""The layout's rules, read from the sources: every module has a floor, and imports what its floor may.

The floors and their rules are drawn on the contributors' page "How the code is laid out"
(docs/layout.md). Imports are read with ``ast`` from every ``import`` statement of a module,
those inside functions included, so an import put off until first use still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "aiml_bge_integrations"
NAME = "aiml_bge_integrations"

PURE = {
    "_batching",
    "_concurrency",
    "_constants",
    "_deprecations",
    "_discovery",
    "_engine",
    "_models",
    "_outcome",
    "_retry",
    "_secrets",
    "_settings",
    "_usage",
    "_warnings",
    "_wire",
    "errors",
    "tokens",
}
"""Decisions without I/O: tested without a socket, a file or an event loop."""
IO = {
    "__init__",
    "_cache",
    "_cached",
    "_client_base",
    "_probe",
    "_sockets",
    "_tally",
    "_telemetry",
    "_transport",
    "client",
}
"""The request core's I/O: sockets, threads, event loops, the cache's file, OpenTelemetry."""
ADAPTERS = {"_adapter", "langchain", "llama_index"}
"""Settings and delegation to the core clients only."""
JOB = {"_job", "_ray_job", "ray", "cli", "demo", "demo_corpus"}
"""The corpus job (command line and Ray), the demo, the command line."""
SERVER = {"server"}
"""The local stand-in server."""

IO_LIBRARIES = {
    "anyio",
    "asyncio",
    "concurrent",
    "http",
    "httpcore",
    "httpx",
    "multiprocessing",
    "selectors",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "urllib.request",
}
"""What a pure module may not import (threading's locks are allowed: they do no I/O)."""
CORE_LOGIC = {
    "_batching",
    "_concurrency",
    "_engine",
    "_outcome",
    "_retry",
    "_sockets",
    "_transport",
    "_wire",
}
"""The core's decisions, which the adapters reach only through the clients."""
FRAMEWORKS = {"langchain_core", "llama_index", "ray", "pyarrow", "opentelemetry"}


def _module_files() -> dict[str, Path]:
    """Each module by the name of its floor unit: a top-level module, or a subpackage."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _unit(module: str) -> str:
    return module.split(".", 1)[0]


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of what ``module`` imports (``aiml_bge_integrations._wire``, ``httpx``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = [NAME, *module.split(".")]
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            if node.module:
                names.add(stem)
            # ``from . import _retry`` imports a module; ``from .x import Y`` a name of x.
            names.update(f"{stem}.{alias.name}" for alias in node.names)
    return names


def _ours(name: str) -> str | None:
    """The floor unit of one of the package's modules, or None for another library."""
    if name == NAME:
        return "__init__"
    if name.startswith(NAME + "."):
        return _unit(name[len(NAME) + 1 :])
    return None


def _is_library(name: str, libraries: set[str]) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in libraries)


MODULES = _module_files()


def test_every_module_has_a_floor() -> None:
    floors = PURE | IO | ADAPTERS | JOB | SERVER
    units = {_unit(m) for m in MODULES}
    assert units - floors == set(), "place the new module on a floor here and in docs/layout.md"
    assert floors - units == set(), "a module named here no longer exists"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) in PURE))
def test_a_pure_module_imports_no_io(module: str) -> None:
    imported = _imports(module, MODULES[module])
    io = sorted(n for n in imported if _is_library(n, IO_LIBRARIES | FRAMEWORKS))
    assert io == [], f"{module} is pure but imports {io}"
    ours = {_ours(n) for n in imported} - {None, _unit(module)}
    above = sorted(u for u in ours if u is not None and u not in PURE)
    assert above == [], f"{module} is pure but imports {above}, which are not"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) in SERVER))
def test_the_server_never_imports_the_client(module: str) -> None:
    ours = {_ours(n) for n in _imports(module, MODULES[module])} - {None}
    allowed = SERVER | PURE
    wrong = sorted(u for u in ours if u is not None and u not in allowed)
    assert wrong == [], f"the server's {module} imports {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) not in SERVER))
def test_nothing_outside_the_server_imports_it(module: str) -> None:
    if _unit(module) in {"cli", "demo"}:  # `aiml-bge serve` and the demo start it
        return
    ours = {_ours(n) for n in _imports(module, MODULES[module])}
    assert "server" not in ours, f"{module} imports the local server"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) in ADAPTERS))
def test_an_adapter_reaches_the_core_only_through_the_clients(module: str) -> None:
    ours = {_ours(n) for n in _imports(module, MODULES[module])} - {None}
    logic = sorted(u for u in ours if u in CORE_LOGIC)
    assert logic == [], f"the adapter {module} imports the core's decisions {logic}"


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    # The reader itself: an import inside a function, relative and absolute, is seen.
    source = tmp_path / "sample.py"
    source.write_text(
        "from . import _retry\nfrom .client import X\n"
        "def f():\n    import httpx\n    from ..server import app\n",
        encoding="utf-8",
    )
    names = _imports("_job.sample", source)
    assert f"{NAME}._job._retry" in names
    assert f"{NAME}._job.client" in names
    assert "httpx" in names
    assert f"{NAME}.server.app" in names
    assert _ours(f"{NAME}.server.app") == "server"
