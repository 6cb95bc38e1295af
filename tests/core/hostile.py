"""A small hostile HTTP server on 127.0.0.1: raw sockets, one thread per connection, bounded in time.

``HostileServer(reply)`` calls ``reply(conn)`` for each POST once its head and body have
been read; ``reply`` writes whatever it likes to the socket (a trickle, a bomb, a lie). A GET
(what a client asks to learn the server's limits) gets a 404, or ``on_get(conn)`` if given.
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
    """Serves ``reply(conn, server)`` to every POST; counts them in ``requests``, GETs in ``gets``."""

    api_key = "sk-hostile-test-key"
    """The key clients are given (the server checks none)."""

    def __init__(
        self,
        reply: Callable[[socket.socket, HostileServer], None],
        on_get: Callable[[socket.socket, HostileServer], None] | None = None,
    ) -> None:
        self.reply = reply
        self.on_get = on_get or _not_found
        self.requests = 0
        self.gets: list[str] = []
        """The paths of the GETs received."""
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
                request = _read_request(conn)
                if request is None:
                    return
                method, path = request
                if method == "GET":
                    self.gets.append(path)
                    self.on_get(conn, self)
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


def _not_found(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(head(404, content_length=0))


def _read_request(conn: socket.socket) -> tuple[str, str] | None:
    """The method and path of a request, once its head and body are read (None: hung up)."""
    data = b""
    for _ in range(10_000):
        if b"\r\n\r\n" in data:
            break
        chunk = conn.recv(65536)
        if not chunk:
            return None
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
            return None
        body += chunk
    method, path, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
    return method, path


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
