"""The clients' I/O parts: request slots, bounded reply reads, the async exchange, connection pools.

What touches sockets, threads and event loops below the two client classes (``client``):
the gates that keep at most the current limit of requests in flight, the reading of a reply
within its request's bounds of size and time, the async request in its own cancel scope, and
the connection pools with their TLS contexts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import ssl
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from ._concurrency import Flights, Limiter, Ticket
from ._constants import LOOPBACK_HOSTS, batches_in_flight, error_body_limit
from ._engine import Failure, Reply, Send
from ._outcome import ReplyTooLarge, WallTimeout
from ._sockets import proxied, watched_client
from .errors import ConfigurationError

__all__ = [
    "ACCEPT_ENCODING",
    "FAILURES",
    "AsyncGate",
    "BoundedBody",
    "Exchange",
    "InOrder",
    "Inflate",
    "LoopState",
    "SyncGate",
    "Vectors",
    "araw_chunks",
    "check_process",
    "check_transport_security",
    "close_at_loop_shutdown",
    "failure",
    "is_loopback_ip",
    "no_tls_context",
    "own_pool",
    "raw_chunks",
    "release",
    "ssl_context",
    "with_end",
]

_Http = TypeVar("_Http", httpx.Client, httpx.AsyncClient)
_F = TypeVar("_F", "Future[Vectors]", "asyncio.Future[Vectors]")
_I = TypeVar("_I")

Vectors = list[list[float]]
"""One batch's vectors."""


class InOrder(Generic[_F]):
    """The batches in flight of one call, handed back in order; the first failure ends the call.

    Works with the sync client's ``concurrent.futures.Future`` and the async client's tasks
    alike: a later batch's error is not kept waiting behind an earlier batch's retries, and at
    most ``batches_in_flight(limit)`` batches are in flight (the threads follow the limit).
    """

    def __init__(self, failed: Any) -> None:
        self.pending: deque[_F] = deque()
        self._failed: Any = failed  # an empty future of the same kind: the first batch that fails

    def add(self, batch: _F) -> None:
        """Put ``batch`` in flight, after those already in flight."""
        batch.add_done_callback(self._watch)  # type: ignore[arg-type]
        self.pending.append(batch)

    def ready(self, at_end: bool, limit: int) -> bool:
        """Whether to wait for the first batch now: all are in flight, or enough are."""
        return bool(self.pending) and (at_end or len(self.pending) >= batches_in_flight(limit))

    def awaited(self) -> list[Any]:
        """What to wait for the first of: the first batch in flight, or any batch failing."""
        return [self.pending[0], self._failed]

    def take(self) -> Vectors:
        """The first batch's vectors (it is done), or the first failure of any batch, raised."""
        if not self.pending[0].done():  # it stays pending, cancelled on the way out, until done
            self._failed.result().result()
        result: Vectors = self.pending.popleft().result()
        return result

    def cancel(self) -> bool:
        """Cancel what is still in flight; True if anything was."""
        self._failed.cancel()
        for batch in self.pending:
            batch.cancel()
        return bool(self.pending)

    def _watch(self, batch: _F) -> None:
        if not batch.cancelled() and batch.exception() is not None:
            with contextlib.suppress(Exception):  # only the first failure is kept
                self._failed.set_result(batch)


def with_end(items: Iterable[_I]) -> Iterator[_I | None]:
    """``items``, then None."""
    yield from items
    yield None


class SyncGate:
    """Slots for the sync client's threads: at most the current limit in flight."""

    def __init__(self, limiter: Limiter) -> None:
        self._flights = Flights(limiter)
        self._cond = threading.Condition()

    def acquire(self, after: int | None, stopped: threading.Event) -> Ticket | None:
        """A slot, or None once ``stopped`` is set (the call was given up: nothing is sent)."""
        with self._cond:
            while not stopped.is_set():
                ticket = self._flights.take(after)
                if ticket is not None:
                    return ticket
                # Woken by every release; the short timeout also sees a call stopped meanwhile.
                self._cond.wait(0.05)
        return None

    def release(self, ticket: Ticket, status: int | None) -> int | None:
        with self._cond:
            mark = self._flights.give_back(ticket, status)
            self._cond.notify_all()
        return mark


class AsyncGate:
    """Slots for the requests of one event loop: at most the current limit in flight."""

    def __init__(self, limiter: Limiter) -> None:
        self._flights = Flights(limiter)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, after: int | None = None) -> Ticket:
        while True:
            ticket = self._flights.take(after)
            if ticket is not None:
                return ticket
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def release(self, ticket: Ticket, status: int | None) -> int | None:
        mark = self._flights.give_back(ticket, status)
        # Everyone waiting looks again: the limit may have grown by more than one.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        return mark


ACCEPT_ENCODING = "gzip, deflate"
"""The content codings a request accepts: those ``Inflate`` undoes within a bound."""

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class Inflate:
    """A reply's ``Content-Encoding`` undone, never more bytes at a time than asked for.

    httpx inflates each chunk as it arrives, whole: one 64 KiB chunk of a gzip bomb becomes
    64 MiB before anyone can look at its size. So the clients read the raw body and inflate
    it here, with ``max_length`` set to what is left of the bound. Only the codings of
    ``ACCEPT_ENCODING`` are undone; any other (``br``, ``zstd``, a stack of two) was not
    asked for and is refused as a body that does not decode, before a byte of it is read.
    """

    def __init__(self, encoding: str) -> None:
        codings = [c.strip().lower() for c in encoding.split(",")]
        codings = [c for c in codings if c not in ("", "identity")]
        if len(codings) > 1 or (codings and codings[0] not in _WBITS):
            raise httpx.DecodingError(
                f"the reply's Content-Encoding {encoding!r} is not one the client asked for "
                f"({ACCEPT_ENCODING})"
            )
        self._coding = codings[0] if codings else None
        self._zlib = zlib.decompressobj(_WBITS[self._coding]) if self._coding else None
        self._first = True

    def take(self, data: bytes, at_most: int) -> bytes:
        """``data`` decoded, cut at ``at_most`` bytes (at least 1): a reply that reaches
        ``at_most`` has at least that many, and what is left of ``data`` is dropped."""
        if self._zlib is None:
            return data
        first, self._first = self._first, False
        try:
            return self._zlib.decompress(data, max(1, at_most))
        except zlib.error as err:
            if first and self._coding == "deflate":  # raw deflate, without zlib's header (as httpx)
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.take(data, at_most)
            raise httpx.DecodingError(
                f"the reply does not decode as {self._coding}: {err}"
            ) from err


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body of a ``stream=True`` response as sent, its coding still on (``iter_raw``).

    A response read whole as it was made (a ``MockTransport`` handler's reply) has only its
    decoded content left, which is given instead (``_inflate`` then leaves it as it is).
    """
    return iter([response.content]) if response.is_stream_consumed else response.iter_raw()


def araw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """``raw_chunks`` for an async response."""
    return _Once(response.content) if response.is_stream_consumed else response.aiter_raw()


class _Once:
    """An async iterator of one item."""

    def __init__(self, item: bytes) -> None:
        self._item: bytes | None = item

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        item, self._item = self._item, None
        if item is None:
            raise StopAsyncIteration
        return item


def _inflate(response: httpx.Response) -> Inflate:
    encoding = response.headers.get("content-encoding", "")
    return Inflate("" if response.is_stream_consumed else encoding)


class BoundedBody:
    """A reply's body, read within its request's bounds of size and time.

    ``add`` takes the body's raw chunks (``iter_raw``) and inflates them with ``Inflate``.
    A 200 reply past ``Send.limit`` bytes (as received or as decoded) raises ``ReplyTooLarge``
    and is read no further, with no more than the bound ever held decoded; an error reply is cut at ``error_body_limit`` of the request (its
    message is at the start, and what it echoes of the request fits). A request past ``Send.timeout`` since it was sent raises ``WallTimeout``: the
    time is checked between chunks, and each read of the socket is given no more than the
    time left (httpcore reads its timeouts from the request before every read), so a server
    that trickles its reply holds a call no longer than its timeout.
    """

    def __init__(
        self, request: httpx.Request, response: httpx.Response, step: Send, started: float
    ) -> None:
        self._request, self._response = request, response
        self._cut = response.status_code != 200
        self._limit = error_body_limit(len(step.body)) if self._cut else step.limit
        self._end = started + step.timeout
        self._parts: list[bytes] = []
        self._size = 0
        self._inflate = _inflate(response)
        declared = response.headers.get("content-length", "")
        if (
            not self._cut
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self._limit
        ):
            raise self._too_large()
        self._check_time()

    def add(self, raw: bytes) -> bool:
        """Keep ``raw``, decoded; False once an error reply's bound is reached (read no more)."""
        room = self._limit - self._size
        chunk = self._inflate.take(raw, room + 1)
        if len(chunk) > room or self._response.num_bytes_downloaded > self._limit:
            if not self._cut:
                raise self._too_large()
            self._parts.append(chunk[:room])
            return False
        self._parts.append(chunk)
        self._size += len(chunk)
        self._check_time()
        return True

    def reply(self, absorbed: int | None) -> Reply:
        return Reply(
            self._response.status_code, self._response.headers, b"".join(self._parts), absorbed
        )

    def _too_large(self) -> ReplyTooLarge:
        headers = self._response.headers
        return ReplyTooLarge(
            self._limit, headers.get("x-inference-id") or headers.get("x-request-id")
        )

    def _check_time(self) -> None:
        left = self._end - time.monotonic()
        if left <= 0:
            raise WallTimeout("the reply was still arriving when the request's time ran out")
        timeouts = self._request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            self._request.extensions["timeout"] = {**timeouts, "read": left}


def failure(err: Exception) -> Failure:
    """What a driver caught, as the engine takes it (see ``_outcome.transport_outcome``)."""
    if isinstance(err, ReplyTooLarge):
        return Failure(err, "too_large")
    if isinstance(err, WallTimeout | httpx.TimeoutException):
        return Failure(err, "timeout")
    if isinstance(err, httpx.DecodingError):
        return Failure(err, "decoding")
    return Failure(err, "connection")


# Everything a request can raise short of a reply: httpx maps httpcore's and anyio's errors
# (and ssl's, and the socket's) to httpx.TransportError; a body that does not decode as its
# Content-Encoding says is httpx.DecodingError; both are httpx.RequestError.
FAILURES = (httpx.RequestError, ReplyTooLarge, WallTimeout)


@dataclass
class LoopState:
    slots: AsyncGate
    http: httpx.AsyncClient
    owned: bool
    closer: AsyncGenerator[None, None] | None = None
    """For a pool the client made: parked in ``close_at_loop_shutdown`` while the loop lives."""


async def close_at_loop_shutdown(http: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    # asyncio.run() closes every async generator still open before it closes the loop
    # (loop.shutdown_asyncgens), so one parked here closes the pool while its loop can still
    # run the close: a finished loop leaves no connection open behind it.
    try:
        yield
    finally:
        await http.aclose()


class Exchange:
    """One request and its whole reply, in a task of its own that is never cancelled natively.

    httpcore protects its connection pool's bookkeeping from cancellation with anyio shields,
    which a plain ``Task.cancel()`` goes through: a request cancelled while its reply is being
    closed can leave a pool slot taken for good (encode/httpcore#1093). So the request runs in
    an inner task inside an anyio cancel scope. Cancelling the caller cancels that scope,
    which anyio delivers around httpcore's shields, and waits for the inner task to finish
    cleaning up. The scope's deadline is the request's timeout, from sending to the last
    byte. The request slot is held from sending until the reply's headers arrive.
    """

    def __init__(
        self, http: httpx.AsyncClient, request: httpx.Request, slots: AsyncGate, step: Send
    ) -> None:
        self._http, self._request, self._slots, self._step = http, request, slots, step
        self._scope: Any = None
        self._caller_cancelled = False

    async def run(self) -> Reply:
        inner = asyncio.ensure_future(self._inner())
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            self._caller_cancelled = True
            if self._scope is not None:
                self._scope.cancel()
            else:  # not started: nothing of httpcore's to protect
                inner.cancel()
            with contextlib.suppress(BaseException):
                await inner  # the cleanup; a second cancellation abandons it
            raise

    async def _inner(self) -> Reply:
        import anyio  # httpx's own dependency; imported only once a request is made

        with anyio.CancelScope() as scope:
            self._scope = scope
            ticket = await self._slots.acquire(self._step.after)
            started = time.monotonic()
            scope.deadline = anyio.current_time() + self._step.timeout
            status: int | None = None
            try:
                response = await self._http.send(self._request, stream=True)
                status = response.status_code
            finally:
                absorbed = self._slots.release(ticket, status)
            # The slot is free once the reply has begun: the server is done with the request,
            # and the next one goes out while this body is still arriving.
            try:
                body = BoundedBody(self._request, response, self._step, started)
                async for chunk in araw_chunks(response):
                    if not body.add(chunk):
                        break
            finally:
                await response.aclose()
                release(response)
            return body.reply(absorbed)
        if not self._caller_cancelled:
            raise WallTimeout("the reply was still arriving when the request's time ran out")
        raise asyncio.CancelledError  # the scope was cancelled: the caller is being cancelled


def own_pool(cls: type[_Http], max_concurrency: int, base_url: str) -> _Http:
    """The connection pool a client builds when given none.

    ``batches_in_flight(max_concurrency)`` connections, all kept alive: a reply's body is
    still being read after its slot is free and the next request has gone out. TLS is
    verified. Each request carries its own timeout; the sync client's pool holds a request to
    it from sending to the last byte (see ``_sockets``).
    """
    connections = batches_in_flight(max_concurrency)
    verify = no_tls_context() if base_url[:5].lower() == "http:" else ssl_context()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    if cls is httpx.Client and not proxied():
        # One time budget per request, and close() that ends requests in flight (_sockets);
        # behind a proxy the environment names, httpx's own pool, which honours it.
        return watched_client(verify, limits)  # type: ignore[return-value]
    return cls(verify=verify, limits=limits)


_MADE_IN: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def check_process(http: httpx.Client | httpx.AsyncClient) -> None:
    """Refuse a caller's ``http_client`` in a process forked from the one it was given in.

    The first call records the process (the client's constructor makes it). A child of a
    fork holds copies of its parent's connections, which are the same sockets: a request
    sent on one would mix with the parent's, and read the parent's replies. The client cannot
    make the caller's object safe (it does not know how it was built), so the child's first
    call says why at once instead; the pools the client makes itself are made afresh in a
    child (``_BaseClient._this_process``).
    """
    made_in = _MADE_IN.setdefault(http, os.getpid())
    if made_in != os.getpid():
        raise ConfigurationError(
            f"http_client was given in process {made_in}, and this process ({os.getpid()}) "
            "was forked from it: its connections are the parent's own sockets, which a "
            "child must not use. Create the http_client in the child (after the fork), or "
            "leave http_client unset so that the client makes its own pool in each process"
        )


def release(response: httpx.Response) -> None:
    # An httpx response and its stream refer to each other, so a finished response (with its
    # request body) waits for the cycle collector; over a long streaming run that is most of
    # the client's memory. Its body has been read into a bytes object of our own (read()
    # would also keep it on the response), so the cycle is cut and reference counting frees
    # the response as soon as it is dropped.
    response.stream = httpx.ByteStream(b"")


def check_transport_security(base_url: str, allow_insecure_http: bool) -> None:
    """Refuse to send the key over plain http outside loopback, unless allowed."""
    # The URL's shape is checked with base_url itself (_settings); this needs two settings.
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    loopback = host in LOOPBACK_HOSTS or is_loopback_ip(host)
    if parts.scheme == "http" and not loopback and not allow_insecure_http:
        raise ConfigurationError(
            f"refusing to send the API key over plain http to {host}: use https, or set "
            "allow_insecure_http=True if this network is trusted"
        )


def is_loopback_ip(host: str) -> bool:
    # An address, not a prefix: "127.0.0.1.example.com" is a remote name like any other.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    # httpx's default verifying context (certifi, or SSL_CERT_FILE/SSL_CERT_DIR), built once:
    # loading the CA bundle takes 0.1-0.3 s, which every client, and every event loop of an
    # async client, would otherwise pay again.
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=1)
def no_tls_context() -> ssl.SSLContext:
    # For a plain-http base URL (the local server) no TLS is ever spoken, so the CA bundle is
    # not loaded. The context still verifies: with no trust anchors, an https connection made
    # through this pool would fail, never be trusted.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class SmallBody:
    """The bytes of a short reply (a feed, a server's description), read up to ``limit``.

    ``add`` takes the raw chunks (``raw_chunks``) and inflates them within what is left of
    the limit, as ``BoundedBody`` does.
    """

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._inflate = _inflate(response)
        self._parts: list[bytes] = []
        self._left = limit

    def add(self, raw: bytes) -> bool:
        """Keep ``raw``, decoded; False once the reply is longer than the limit (read no further)."""
        chunk = self._inflate.take(raw, self._left + 1)
        self._left -= len(chunk)
        self._parts.append(chunk)
        return self._left >= 0

    def value(self) -> bytes:
        return b"".join(self._parts)


_SMALL_GET_FAILURES = (httpx.HTTPError, *FAILURES)


SmallReply = tuple[int, bytes] | None
"""What a small GET gives: ``(200, body)``, ``(status, b"")`` for a refusal or a reply declared
too long, or None when there was no reply that could be read whole."""


def _refused(response: httpx.Response, limit: int) -> bool:
    length = response.headers.get("Content-Length", "")
    return response.status_code != 200 or (length.isdigit() and int(length) > limit)


def get_small(
    http: httpx.Client, request: httpx.Request, limit: int, deadline: float | None = None
) -> SmallReply:
    """A short reply to ``request`` (a feed, a server's description), redirects not followed,
    read raw and inflated within ``limit`` bytes, and (``deadline``, monotonic) in time; the
    request's own timeout bounds each wait. Any failure to get a reply is None."""
    request.headers["Accept-Encoding"] = ACCEPT_ENCODING
    with (
        contextlib.suppress(*_SMALL_GET_FAILURES),
        contextlib.closing(http.send(request, stream=True, follow_redirects=False)) as response,
    ):
        if _refused(response, limit):
            return response.status_code, b""
        body = SmallBody(response, limit)
        for chunk in raw_chunks(response):
            if not body.add(chunk) or (deadline is not None and time.monotonic() > deadline):
                return None
        return 200, body.value()
    return None


async def aget_small(http: httpx.AsyncClient, request: httpx.Request, limit: int) -> SmallReply:
    """``get_small`` on an event loop (the caller's cancel scope or timeout bounds its time)."""
    request.headers["Accept-Encoding"] = ACCEPT_ENCODING
    with contextlib.suppress(*_SMALL_GET_FAILURES):
        response = await http.send(request, stream=True, follow_redirects=False)
        try:
            if _refused(response, limit):
                return response.status_code, b""
            body = SmallBody(response, limit)
            async for chunk in araw_chunks(response):
                if not body.add(chunk):
                    return None
            return 200, body.value()
        finally:
            await response.aclose()
    return None


def body_of(reply: SmallReply) -> bytes | None:
    """The body of a small GET that was answered 200, else None."""
    return reply[1] if reply is not None and reply[0] == 200 else None
