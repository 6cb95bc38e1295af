"""A small hostile HTTP server on 127.0.0.1: raw sockets, one thread per connection, bounded in time.

``HostileServer(reply)`` calls ``reply(conn)`` for each request once its head and body have
been read; ``reply`` writes whatever it likes to the socket (a trickle, a bomb, a lie).
Every socket has a timeout, every loop a count, and ``close()`` (or leaving the ``with``)
stops the server and waits for its threads at most a few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

STOP_AFTER = 30.0
"""No connection is served longer than this, whatever its reply does."""


class HostileServer:
    """Serves ``reply(conn, server)`` to every request; counts requests in ``requests``."""

    api_key = "sk-hostile-test-key"
    """The key clients are given (the server checks none)."""

    def __init__(self, reply: Callable[[socket.socket, HostileServer], None]) -> None:
        self.reply = reply
        self.requests = 0
        self.stopped = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def base_url(self) -> str:
        """The root to give a client (``/v1``; any path is answered alike)."""
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        for _ in range(1000):  # bounded: no test makes this many connections
            if self.stopped.is_set():
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with conn:
            try:
                if not _read_request(conn):
                    return
                self.requests += 1
                self.reply(conn, self)
            except OSError:  # the client hung up: what a hostile server expects
                pass

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False once the server is stopping (the reply should end)."""
        return not self.stopped.wait(seconds)

    def close(self) -> None:
        self.stopped.set()
        self._accepting.join(5.0)
        for worker in self._threads:
            worker.join(5.0)
        self._sock.close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _read_request(conn: socket.socket) -> bool:
    data = b""
    for _ in range(10_000):
        if b"\r\n\r\n" in data:
            break
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    for _ in range(10_000):
        if len(body) >= length:
            break
        chunk = conn.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def head(status: int = 200, **headers: str | int) -> bytes:
    """A response head: the status line and ``headers`` (``content_length`` -> Content-Length).

    Every reply closes its connection (this server answers one request per connection).
    """
    headers.setdefault("connection", "close")
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def trickle(conn: socket.socket, server: HostileServer, data: bytes, every: float) -> None:
    """Send ``data`` one byte each ``every`` seconds, for at most ``STOP_AFTER`` seconds."""
    end = time.monotonic() + STOP_AFTER
    for byte in data:
        if time.monotonic() > end or not server.sleep(every):
            return
        conn.sendall(bytes([byte]))
