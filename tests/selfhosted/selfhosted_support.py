"""Shared constants and helpers of the self-hosted server tests (imported by name, not relatively)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from server_dialects import DIALECTS  # every dialect: the shipped aiml, then the test-only ones

__all__ = ["DIALECTS", "SERVER_KEY", "BodyRewritingTransport"]

SERVER_KEY = "selfhosted-test-key-7f3a9c"
"""The key every dedicated server in this directory accepts."""


class BodyRewritingTransport(httpx.BaseTransport):
    """Forwards every request over real HTTP after ``rewrite`` has changed its JSON body.

    Stands for a buggy proxy or client in front of the server, so the server's own validation
    replies (which a correct client never provokes) reach the client under test.
    """

    def __init__(self, rewrite: Callable[[bytes], bytes]) -> None:
        self._rewrite = rewrite
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = self._rewrite(request.read())
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        forwarded = httpx.Request(request.method, request.url, headers=headers, content=body)
        return self._inner.handle_request(forwarded)

    def close(self) -> None:
        self._inner.close()
