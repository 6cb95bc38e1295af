"""Helpers shared by the local server's tests (clients and request bodies)."""

from __future__ import annotations

from typing import Any

import httpx

from aiml_bge_integrations.server import LocalServer

MODEL = "BAAI/bge-base-en-v1.5"


def client_for(
    server: LocalServer, timeout: float = 10.0, key: str | None = "server"
) -> httpx.Client:
    """An httpx client on ``server.base_url`` sending the server's key (or ``key``, or none)."""
    headers = {}
    token = server.api_key if key == "server" else key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    # Plain HTTP on loopback: verify=False only skips loading CA certificates (slow, unused).
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=timeout, verify=False)


def async_client_for(server: LocalServer, timeout: float = 10.0) -> httpx.AsyncClient:
    """The async twin of ``client_for``."""
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    return httpx.AsyncClient(
        base_url=server.base_url, headers=headers, timeout=timeout, verify=False
    )


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}
