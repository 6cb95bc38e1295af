"""The server package's public surface, and its independence from the client side."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import aiml_bge_integrations.server as server_pkg

MODULES = [
    "aiml_bge_integrations.server",
    "aiml_bge_integrations.server.app",
    "aiml_bge_integrations.server.backend",
    "aiml_bge_integrations.server.deprecations",
    "aiml_bge_integrations.server.dialects",
    "aiml_bge_integrations.server.faults",
    "aiml_bge_integrations.server.runner",
    "aiml_bge_integrations.server.stats",
]


def test_package_exports() -> None:
    assert {
        "LocalServer", "ServerConfig", "FaultConfig", "HashingEmbedder",
        "create_app", "serve_main", "FAULT_KINDS",
        "Dialect", "AimlDialect", "register_dialect", "dialect_names",
    } <= set(server_pkg.__all__)  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_exists_and_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    for public in module.__all__:
        obj = getattr(module, public)
        if callable(obj) and not public.isupper():
            assert obj.__doc__, f"{name}.{public} has no docstring"


def test_the_server_never_imports_the_client_side() -> None:
    forbidden = {
        "client",
        "_retry",
        "_batching",
        "_wire",
        "errors",
        "langchain",
        "llama_index",
        "cli",
    }
    for path in Path(server_pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = set((node.module or "").split(".")) | {a.name for a in node.names}
                if node.level >= 2 or (node.module or "").startswith("aiml_bge_integrations"):
                    assert not parts & forbidden, f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not set(alias.name.split(".")) & forbidden, (
                        f"{path.name} imports {alias.name}"
                    )
