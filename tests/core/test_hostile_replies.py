"""Replies a hostile or broken server can send, and what the clients make of them.

Each test runs a small raw-socket server on 127.0.0.1 (hostile.py) that sends what no
well-behaved server would: a reply without end, a gzip bomb, a body one byte a second, NaN
vectors, a body that is not what its Content-Encoding says, nonsensical Retry-After values.
Every call runs in a thread joined with a bound, so a client that does not bound its time
shows as a failed assertion, not a hung suite.
"""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from base64 import b64encode
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from core_helpers import MODES, Outcome, Sleeps, run_embed, sync_client
from hostile import STOP_AFTER, HostileServer, head, trickle

from aiml_bge_integrations.errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    ModelNotFoundError,
    ResponseTooLargeError,
    ResponseValidationError,
)

MODEL = "test/unknown-dimension"  # the bound is then the generous per-input default
KEY = "sk-hostile-test-key"


def _embed_traced(mode: str, server: HostileServer, **settings: Any) -> tuple[Outcome, int]:
    """``_embed``, and the peak of memory traced meanwhile (bytes)."""
    tracemalloc.start()
    try:
        out = _embed(mode, server, **settings)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _embed(mode: str, server: HostileServer, **settings: Any) -> Outcome:
    """``embed_documents(["hello"])`` against ``server``, in a thread joined within 20 s."""
    settings.setdefault("model", MODEL)
    settings.setdefault("api_key", KEY)
    result: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: result.append(run_embed(mode, server, ["hello"], **settings)), daemon=True
    )
    worker.start()
    worker.join(20.0)
    assert not worker.is_alive(), "the call was still running after 20 s"
    return result[0]


def _vectors_reply(embedding: Any) -> bytes:
    body = orjson.dumps({"object": "list", "data": [{"index": 0, "embedding": embedding}]})
    return head(200, content_type="application/json", content_length=len(body)) + body


def _answer(reply: bytes) -> Callable[[socket.socket, HostileServer], None]:
    return lambda conn, server: conn.sendall(reply)


# -- a reply can take all the client's memory --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_reply_declaring_a_gibibyte_is_refused_at_its_head_and_not_fetched_again(
    mode: str, sleeps: Sleeps
) -> None:
    def reply(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(head(200, content_type="application/json", content_length=2**30))
        for _ in range(64):  # some of it, then the client should have hung up
            conn.sendall(b" " * 65536)

    with HostileServer(reply) as server:
        out = _embed(mode, server)
    assert isinstance(out.error, ResponseTooLargeError), out.error
    assert out.error.limit < 2**20 and f"{out.error.limit:,} bytes" in str(out.error)
    assert server.requests == 1  # a reply that is too large is never asked for again


@pytest.mark.parametrize("mode", MODES)
def test_a_chunked_reply_without_end_stops_at_the_bound(mode: str, sleeps: Sleeps) -> None:
    sent = [0]

    def reply(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(head(200, content_type="application/json", transfer_encoding="chunked"))
        chunk = b"10000\r\n" + b"[" * 65536 + b"\r\n"
        for _ in range(16_384):  # 1 GiB at most; the old client read it all
            conn.sendall(chunk)
            sent[0] += 65536

    with HostileServer(reply) as server:
        out = _embed(mode, server)
    assert isinstance(out.error, ResponseTooLargeError), out.error
    assert sent[0] < 64 * 2**20  # the client stopped reading (what is left sits in buffers)
    assert server.requests == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_gzip_bomb_stops_at_the_bound_of_the_inflated_size(mode: str, sleeps: Sleeps) -> None:
    bomb = gzip.compress(b" " * (256 * 2**20), compresslevel=9)  # 256 MiB in about 256 KiB
    reply = (
        head(
            200, content_type="application/json", content_encoding="gzip", content_length=len(bomb)
        )
        + bomb
    )
    with HostileServer(_answer(reply)) as server:
        out = _embed(mode, server)
    assert isinstance(out.error, ResponseTooLargeError), out.error
    assert server.requests == 1


def _inflating(encoding: str, size: int) -> bytes:
    """A reply of ``size`` spaces compressed with ``encoding`` (a bomb: ~1/1000 of its size)."""
    data = b" " * size
    if encoding == "gzip":
        body = gzip.compress(data, compresslevel=9)
    elif encoding == "deflate":
        body = zlib.compress(data, 9)
    else:
        body = pytest.importorskip("zstandard").ZstdCompressor(level=19).compress(data)
    del data
    return _encoded_reply(body, encoding)


def _encoded_reply(body: bytes, encoding: str) -> bytes:
    """A 200 reply of ``body``, said to be in ``encoding``."""
    head_ = head(
        200, content_type="application/json", content_encoding=encoding, content_length=len(body)
    )
    return head_ + body


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("mode", MODES)
def test_a_compressed_reply_is_bounded_by_its_decoded_bytes_exactly(
    mode: str, encoding: str, sleeps: Sleeps
) -> None:
    # 200 MiB in about 200 KiB: each 64 KiB chunk of it inflates to some 64 MiB, which the
    # client once decoded whole before it compared the size with its bound (~280 KB here).
    reply = _inflating(encoding, 200 * 2**20)
    with HostileServer(_answer(reply)) as server:
        out, peak = _embed_traced(mode, server)
    assert isinstance(out.error, ResponseTooLargeError), out.error
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading the reply"


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", _raw_deflate),  # deflate without zlib's header, as some servers send it
        ("identity", lambda data: data),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "identity"],
)
@pytest.mark.parametrize("mode", MODES)
def test_a_compressed_reply_within_the_bound_is_read(
    mode: str, encoding: str, pack: Callable[[bytes], bytes], sleeps: Sleeps
) -> None:
    vector = [0.5, -0.25] * 512
    body = pack(orjson.dumps({"object": "list", "data": [{"index": 0, "embedding": vector}]}))
    with HostileServer(_answer(_encoded_reply(body, encoding))) as server:
        out = _embed(mode, server)
    assert out.error is None, out.error
    assert out.vectors == [vector]


@pytest.mark.parametrize("mode", MODES)
def test_an_encoding_the_client_did_not_ask_for_is_refused_unread(
    mode: str, sleeps: Sleeps
) -> None:
    # The client asks for gzip and deflate only (which it inflates within its bound); httpx
    # would inflate zstd (or br) replies a chunk at a time, without a bound.
    reply = _inflating("zstd", 200 * 2**20)
    with HostileServer(_answer(reply)) as server:
        out, peak = _embed_traced(mode, server, max_retries=0)
    assert isinstance(out.error, APIConnectionError), out.error
    assert "zstd" in str(out.error) and out.usage.retries_by_cause == {}
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading the reply"


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
@pytest.mark.parametrize("mode", MODES)
def test_the_deprecation_feed_after_a_404_is_bounded_by_its_decoded_bytes(
    mode: str, encoding: str, sleeps: Sleeps
) -> None:
    # After a 404 for the model the client reads the server's deprecation feed (64 KiB at
    # most); it once inflated that reply a chunk at a time, and asked for zstd too.
    missing = b'{"message": "model not found"}'
    bomb = _inflating(encoding, 200 * 2**20)

    def reply(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(head(404, content_type="application/json", content_length=len(missing)))
        conn.sendall(missing)

    # Every GET gets the bomb: the feed's, and the two that ask what the server publishes.
    with HostileServer(reply, on_get=lambda conn, server: conn.sendall(bomb)) as server:
        out, peak = _embed_traced(mode, server, max_retries=0)
    assert isinstance(out.error, ModelNotFoundError), out.error
    assert server.requests == 1
    # The feed was asked for, and its bomb left unread.
    assert server.gets == ["/info", "/v1/models", "/v1/models/deprecations"]
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading the feed"


@pytest.mark.parametrize("mode", MODES)
def test_a_huge_error_reply_is_cut_and_keeps_its_status(mode: str, sleeps: Sleeps) -> None:
    total, sent = 256 * 2**20, [0]
    message = b'{"message": "the server is on fire"}'

    def reply(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(head(500, content_type="text/plain", content_length=total) + message)
        for _ in range(total // 65536):
            conn.sendall(b" " * 65536)
            sent[0] += 65536

    with HostileServer(reply) as server:
        out = _embed(mode, server, max_retries=0)
    assert isinstance(out.error, InternalServerError), out.error
    assert "the server is on fire" in str(out.error)
    assert sent[0] < total // 2  # read up to its bound, not to its end


def test_max_response_bytes_lets_a_larger_reply_through(sleeps: Sleeps) -> None:
    reply = _vectors_reply([0.5] * 200_000)  # 200,000 dimensions: above the default bound
    with HostileServer(_answer(reply)) as server:
        assert isinstance(_embed("sync", server).error, ResponseTooLargeError)
        out = _embed("sync", server, max_response_bytes=10 * 2**20)
    assert out.error is None and out.vectors is not None and len(out.vectors[0]) == 200_000


# -- timeout and deadline bound the wall time --------------------------------------------------


def _trickler(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(head(200, content_type="application/json", content_length=1000))
    trickle(conn, server, b" " * 1000, every=1.0)


@pytest.mark.parametrize("mode", MODES)
def test_timeout_bounds_a_request_whose_reply_trickles(mode: str) -> None:
    # The server sends a byte a second for 30 s; the old clients waited for all of it.
    with HostileServer(_trickler) as server:
        out = _embed(mode, server, timeout=2, deadline=5, max_retries=0)
    assert isinstance(out.error, APITimeoutError), out.error


@pytest.mark.parametrize("mode", MODES)
def test_deadline_bounds_a_call_whose_replies_trickle(mode: str) -> None:
    with HostileServer(_trickler) as server:
        out = _embed(mode, server, timeout=2, deadline=3, max_retries=5)
    assert isinstance(out.error, APITimeoutError), out.error
    assert "deadline" in str(out.error) or "timed out" in str(out.error)


def test_close_stops_a_call_reading_a_trickling_reply() -> None:
    with HostileServer(_trickler) as server:
        client = sync_client(server, api_key=KEY, model=MODEL, timeout=60, max_retries=0)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.embed_documents(["hello"])
            except BaseException as err:
                errors.append(err)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        for _ in range(100):  # until the request is on the wire (10 s at most)
            if server.requests:
                break
            server.sleep(0.1)
        closer = threading.Thread(target=client.close, daemon=True)
        closer.start()
        closer.join(5.0)
        assert not closer.is_alive(), "close() waited on the trickling reply"
        caller.join(5.0)
        assert not caller.is_alive(), "the call went on reading after close()"
    assert client.is_closed
    assert len(errors) == 1 and isinstance(errors[0], APIConnectionError), errors


def _silent(conn: socket.socket, server: HostileServer) -> None:
    server.sleep(STOP_AFTER)  # the request was read; not a byte of reply, until the test ends


@pytest.mark.parametrize("max_concurrency", [1, 4], ids=["caller-thread", "workers"])
def test_close_ends_a_request_whose_server_sends_nothing(max_concurrency: int) -> None:
    # The old close() waited for the request's own timeout (60 s here), as did the call.
    with HostileServer(_silent) as server:
        client = sync_client(
            server,
            api_key=KEY,
            model=MODEL,
            timeout=60,
            max_retries=3,
            max_concurrency=max_concurrency,
        )
        errors: list[BaseException] = []
        ended: list[float] = []

        def call() -> None:
            try:
                client.embed_documents(["hello"])
            except BaseException as err:
                errors.append(err)
            ended.append(time.monotonic())

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        for _ in range(100):  # until the request is on the wire (10 s at most)
            if server.requests:
                break
            server.sleep(0.1)
        assert server.requests == 1
        server.sleep(0.3)  # the request is now waiting for its reply's head
        closing = time.monotonic()
        closer = threading.Thread(target=client.close, daemon=True)
        closer.start()
        closer.join(2.0)
        assert not closer.is_alive(), "close() waited on a request whose server sends nothing"
        caller.join(2.0)
        assert not caller.is_alive(), "the call went on waiting after close()"
    assert ended[0] - closing < 2.0
    assert len(errors) == 1 and isinstance(errors[0], APIConnectionError), errors
    assert server.requests == 1  # nothing was sent again after close()


def _slow_head(conn: socket.socket, server: HostileServer) -> None:
    # A reply head that keeps coming, a byte each 0.1 s for up to 30 s, then nothing.
    trickle(conn, server, b"HTTP/1.1 200 OK\r\n" + b"x-padding: " + b"a" * 400, every=0.1)
    server.sleep(STOP_AFTER)


@pytest.mark.parametrize(
    ("settings", "bound"),
    [({"timeout": 2}, 2.0), ({"timeout": 30, "deadline": 2}, 2.0)],
    ids=["timeout", "deadline"],
)
@pytest.mark.parametrize("mode", MODES)
def test_a_reply_head_that_trickles_is_bounded_by_timeout_and_deadline(
    mode: str, settings: dict[str, float], bound: float
) -> None:
    # Each read of the head once had the whole timeout to itself: a byte each 0.1 s held the
    # call for as long as the server kept sending.
    with HostileServer(_slow_head) as server:
        started = time.monotonic()
        out = _embed(mode, server, max_retries=0, **settings)
        took = time.monotonic() - started
    assert isinstance(out.error, APITimeoutError), out.error
    assert took < bound + 1.0, f"the call took {took:.1f} s"


def test_a_proxy_the_environment_names_is_still_honoured(
    monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps
) -> None:
    # The sync client's own pool (one time budget per request) is httpcore's under a
    # transport of its own; behind a proxy named in the environment it stays httpx's.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: reached only through the proxy
        target = f"http://127.0.0.1:{unused.getsockname()[1]}/v1"
        with HostileServer(_answer(_vectors_reply([0.5, 0.25]))) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            with sync_client(proxy, base_url=target, model=MODEL, max_retries=0) as client:
                assert client.embed_documents(["hello"]) == [[0.5, 0.25]]
            assert proxy.requests == 1


# -- replies the client refuses, errors it types -----------------------------------------------


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"]
)
@pytest.mark.parametrize("mode", MODES)
def test_base64_vectors_holding_nan_or_infinity_are_refused(
    mode: str, value: float, sleeps: Sleeps
) -> None:
    vector = b64encode(struct.pack("<3f", 0.5, value, -0.25)).decode()
    with HostileServer(_answer(_vectors_reply(vector))) as server:
        out = _embed(mode, server, encoding_format="base64")
    assert isinstance(out.error, ResponseValidationError), out.error
    assert "finite float32" in str(out.error)


@pytest.mark.parametrize("mode", MODES)
def test_a_json_value_beyond_float32_is_refused(mode: str, sleeps: Sleeps) -> None:
    body = b'{"data": [{"index": 0, "embedding": [0.5, 1e39]}]}'
    reply = head(200, content_type="application/json", content_length=len(body)) + body
    with HostileServer(_answer(reply)) as server:
        out = _embed(mode, server)
    assert isinstance(out.error, ResponseValidationError), out.error
    assert "1e+39" in str(out.error)


@pytest.mark.parametrize("mode", MODES)
def test_a_body_that_is_not_what_its_encoding_says_is_a_retried_connection_error(
    mode: str, sleeps: Sleeps
) -> None:
    body = b"this is not gzip at all"
    reply = (
        head(
            200, content_type="application/json", content_encoding="gzip", content_length=len(body)
        )
        + body
    )
    with HostileServer(_answer(reply)) as server:
        out = _embed(mode, server, max_retries=1)
    assert isinstance(out.error, APIConnectionError), out.error  # not a bare httpx.DecodingError
    assert out.usage.retries_by_cause == {"decoding": 1}
    assert server.requests == 2


@pytest.mark.parametrize(
    "header",
    [
        "Retry-After: -5",
        "Retry-After: nan",
        "Retry-After: Mon, 01 Jan 2001 00:00:00 GMT",
        "retry-after-ms: -1",
    ],
)
def test_a_nonsensical_retry_after_falls_back_to_the_backoff(header: str, sleeps: Sleeps) -> None:
    ok = _vectors_reply([0.5, 0.25])

    def reply(conn: socket.socket, server: HostileServer) -> None:
        if server.requests == 1:
            name, _, value = header.partition(": ")
            conn.sendall(head(429, content_length=0, **{name.replace("-", "_"): value}))
        else:
            conn.sendall(ok)

    with HostileServer(reply) as server:
        out = _embed("sync", server, adaptive_concurrency=False, max_concurrency=1)
    assert out.error is None, out.error
    # The 429 backoff (1 s less up to a quarter of jitter), where the old client waited 0.
    assert len(sleeps.delays) == 1 and 0.75 <= sleeps.delays[0] <= 1.0, sleeps.delays
