"""A small embeddings server on 127.0.0.1 whose replies a test scripts, and that counts requests.

``ScriptedServer()`` answers ``POST /v1/embeddings`` with one vector per input (derived from
the text, so equal texts get equal vectors) unless the test queued replies in ``script``
(status, JSON body or bytes, headers; ``"default"`` for one default reply); ``GET`` paths
answer from ``pages``. A request that carries a text in ``refuse`` gets 422 naming that input
by its position (FastAPI's ``detail[].loc``), whatever else it carries. Every request is
recorded in ``requests`` (method, path, headers, parsed JSON body). Bounded: it serves until
closed, each connection with a socket timeout.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedServer", "vector_of"]

DIM = 768


def vector_of(text: str, dim: int = DIM) -> list[float]:
    """The vector the server gives ``text`` by default (exact in float32)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % 32] - 128) / 128 for i in range(dim)]


class ScriptedServer:
    def __init__(self, *, model: str | None = None, dim: int = DIM) -> None:
        self.model = model
        """The model the default replies name (None: the model asked for)."""
        self.dim = dim
        self.script: deque[Any] = deque()
        self.refuse: set[str] = set()
        """Texts refused with 422 naming them."""
        self.pages: dict[str, tuple[int, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server._record("GET", self.path, dict(self.headers), None)
                status, body = server.pages.get(self.path, (404, {"message": "no such page"}))
                self._answer(status, body, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                server._record("POST", self.path, dict(self.headers), payload)
                with server._lock:
                    scripted = server.script.popleft() if server.script else None
                if scripted is not None and scripted != "default":
                    self._answer(*scripted)
                    return
                inputs = payload.get("input", [])
                bad = [i for i, t in enumerate(inputs) if t in server.refuse]
                if bad:
                    detail = [
                        {"loc": ["body", "input", bad[0]], "msg": "this input is not accepted"}
                    ]
                    self._answer(422, {"detail": detail}, {})
                    return
                data = [
                    {"object": "embedding", "index": i, "embedding": vector_of(t, server.dim)}
                    for i, t in enumerate(inputs)
                ]
                tokens = sum(len(t.split()) for t in inputs)
                body = {
                    "object": "list",
                    "data": data,
                    "model": server.model or payload.get("model"),
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
                self._answer(200, body, {})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})

    def posts(self) -> list[dict[str, Any]]:
        """The embeddings requests received so far."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]

    def sent_texts(self) -> list[str]:
        """Every input of every embeddings request, in the order received."""
        return [t for r in self.posts() for t in r["body"]["input"]]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
