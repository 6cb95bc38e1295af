"""The local AIML-compatible embeddings server: a stand-in for tests, demos and benchmarks.

It speaks the AI/ML API's ``POST /v1/embeddings`` over real HTTP, with auth, limits, seeded
fault injection and counters; another server's wording can be plugged in as a ``Dialect``
(``ServerConfig(dialect=...)``, ``register_dialect``). Its vectors come from
``HashingEmbedder``: deterministic unit vectors from hashed words, **not** the real
BAAI/bge-base-en-v1.5 model.

Modules: ``backend`` (the stand-in vectors), ``dialects`` (how replies are worded),
``faults`` (what can go wrong), ``app`` (the Starlette app and ``ServerConfig``), ``stats``
(the counters), ``runner`` (``LocalServer`` and ``serve_main``).

Example::

    from aiml_bge_integrations.server import FaultConfig, LocalServer

    with LocalServer(faults=FaultConfig(script=["503", None])) as server:
        ...  # point a client at server.base_url with server.api_key

Command line: ``aiml-bge serve --port 8000`` or ``python -m aiml_bge_integrations.server``.
"""

from __future__ import annotations

from .app import ServerConfig, create_app
from .backend import HashingEmbedder
from .dialects import AimlDialect, Dialect, dialect_names, register_dialect
from .faults import FAULT_KINDS, FaultConfig
from .runner import LocalServer, serve_main
from .stats import ServerStats

__all__ = [
    "FAULT_KINDS",
    "AimlDialect",
    "Dialect",
    "FaultConfig",
    "HashingEmbedder",
    "LocalServer",
    "ServerConfig",
    "ServerStats",
    "create_app",
    "dialect_names",
    "register_dialect",
    "serve_main",
]
