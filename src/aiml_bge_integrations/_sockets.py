"""The sync client's own connection pool: one time budget per request, sockets ended on close.

httpx gives each phase of a request (connect, write, each read) the whole ``timeout``, so a
server that trickles its reply head a byte at a time holds a request for as long as it
likes, and a blocked read cannot be woken from another thread. The pool made here is
httpcore's, through its public network-backend seam (``httpcore.ConnectionPool(
network_backend=...)``), in an ``httpx.BaseTransport`` of a few lines. Its streams give
every connect, write and read no more than what is left of the request's budget (from the
moment the request is handed to the pool to the last byte of its body), and ``end_requests``
shuts down every socket of the pool, which wakes a thread blocked on one at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, cast

import httpcore
import httpx

__all__ = ["end_requests", "proxied", "watched_client"]

_local = threading.local()  # .end: when this thread's request runs out of time (monotonic)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout``, or less: what is left of the current request's budget on this thread."""
    end: float | None = getattr(_local, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise expired("the request's time ran out")
    return left if timeout is None else min(timeout, left)


@contextlib.contextmanager
def _within(end: float | None) -> Iterator[None]:
    previous = getattr(_local, "end", None)
    _local.end = end
    try:
        yield
    finally:
        _local.end = previous


class _Stream(httpcore.NetworkStream):
    """A connection's stream, whose every wait is cut at the request's budget."""

    def __init__(self, backend: _Backend, inner: httpcore.NetworkStream) -> None:
        self._backend, self._inner = backend, inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._backend.forget(self)
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        self._inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return self

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def end(self) -> None:
        """Shut the socket down: a read or write blocked on it in another thread returns now."""
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            # socket.socket's own shutdown, also for an SSLSocket (whose override would drop
            # its SSL object under the thread reading with it).
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync backend, keeping the streams it opened; refuses new ones once ended."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._lock = threading.Lock()
        self._streams: set[_Stream] = set()
        self._ended = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        inner = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return self._keep(inner)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return self._keep(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def _keep(self, inner: httpcore.NetworkStream) -> _Stream:
        stream = _Stream(self, inner)
        with self._lock:
            if not self._ended:
                self._streams.add(stream)
                return stream
        inner.close()
        raise httpcore.ConnectError("the client was closed")

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def end(self) -> None:
        with self._lock:
            self._ended = True
            streams = list(self._streams)
        for stream in streams:
            stream.end()


# httpcore's errors as httpx raises them (the most specific first).
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _as_httpx(end: float | None) -> Iterator[None]:
    with _within(end):
        try:
            yield
        except Exception as err:
            for core, mapped in _HTTPX_ERRORS:
                if isinstance(err, core):
                    raise mapped(str(err)) from err
            raise


class _Body(httpx.SyncByteStream):
    """A reply's body; each read within its request's budget."""

    def __init__(self, inner: Iterable[bytes], end: float | None) -> None:
        self._inner, self._end = inner, end

    def __iter__(self) -> Iterator[bytes]:
        parts = iter(self._inner)
        while True:
            with _as_httpx(self._end):
                part = next(parts, None)
            if part is None:
                return
            yield part

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            with _as_httpx(None):
                close()


class _Transport(httpx.BaseTransport):
    """httpcore's pool on ``_Backend``: a request's timeout is one budget, send to last byte."""

    def __init__(self, pool: httpcore.ConnectionPool, backend: _Backend) -> None:
        self._pool, self.backend = pool, backend

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        budget = [t for t in timeouts.values() if isinstance(t, int | float)]
        end = time.monotonic() + max(budget) if budget else None
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx(end):
            reply = self._pool.handle_request(core)
        return httpx.Response(
            status_code=reply.status,
            headers=reply.headers,
            stream=_Body(cast("Iterable[bytes]", reply.stream), end),  # a sync pool's stream
            extensions=reply.extensions,
        )

    def close(self) -> None:
        self._pool.close()


_WATCHED: weakref.WeakKeyDictionary[httpx.Client, _Backend] = weakref.WeakKeyDictionary()


def proxied() -> bool:
    """Whether the environment names a proxy (httpx's own pool then honours it, as before)."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


def watched_client(verify: Any, limits: httpx.Limits) -> httpx.Client:
    """An ``httpx.Client`` on ``_Transport``: ``verify`` is an SSL context."""
    backend = _Backend()
    pool = httpcore.ConnectionPool(
        ssl_context=verify,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    http = httpx.Client(transport=_Transport(pool, backend))
    _WATCHED[http] = backend
    return http


def end_requests(http: httpx.Client) -> None:
    """End every request in flight on ``http`` now, if ``watched_client`` made it.

    Its sockets are shut down, so a thread blocked reading one (a server that sends
    nothing) gets an error at once instead of at its timeout; the pool opens no new
    connection after this. Any other client is left alone.
    """
    backend = _WATCHED.get(http)
    if backend is not None:
        backend.end()
