"""The server's default limits: one request cannot run it out of memory, nor many connections.

The body is refused before it is held whole: a declared ``Content-Length`` over the limit is
answered at once, and a chunked body is counted as it arrives. The memory tests run the server
in its own process (``python -m aiml_bge_integrations.server``, the defaults of ``aiml-bge
serve``) and read its resident set from ``/proc``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import LocalServer, ServerConfig
from aiml_bge_integrations.server.dialects import AimlDialect

Factory = Callable[..., LocalServer]

MB = 1_000_000
_HEAD = b'{"model": "' + DEFAULT_MODEL.encode() + b'", "input": ["'


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


class _ServerProcess:
    def __init__(self, proc: subprocess.Popen[str], root: str) -> None:
        self.proc = proc
        self.root = root
        host, port = root.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def rss(self) -> int:
        return _rss_bytes(self.proc.pid)


@pytest.fixture(scope="module")
def server_process() -> Iterator[_ServerProcess]:
    """``aiml-bge serve`` with its defaults, in its own process, open mode on loopback."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's memory")
    env = {k: v for k, v in os.environ.items() if k != "AIMLAPI_API_KEY"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiml_bge_integrations.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket listens
        base_url = line.split(" at ", 1)[1].split(";", 1)[0]
        server = _ServerProcess(proc, base_url.removesuffix("/v1"))
        with httpx.Client(base_url=base_url, timeout=30, verify=False) as client:
            # Warm up: the first request loads the tokenizer and the embedder.
            headers = {"Authorization": "Bearer any"}
            body = {"model": DEFAULT_MODEL, "input": ["warm up " * 50] * 64}
            assert client.post("/embeddings", json=body, headers=headers).status_code == 200
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _head(length_header: bytes) -> bytes:
    return (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer any\r\n"
        b"Content-Type: application/json\r\n" + length_header + b"\r\n"
    )


def _read_reply(sock: socket.socket) -> bytes:
    """The server's reply: headers and a ``Content-Length`` body (bounded in time)."""
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            lengths = [
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ]
            if len(body) >= (lengths[0] if lengths else 0):
                break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _send_until_answered(sock: socket.socket, pieces: Iterator[bytes]) -> None:
    """Send ``pieces`` and stop early once the server has answered (it may stop reading)."""
    timeout = sock.gettimeout()
    for piece in pieces:
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except BlockingIOError:
            pass
        finally:
            sock.settimeout(timeout)
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):  # pragma: no cover - refused early
            break


def test_a_400_mb_declared_body_is_refused_with_the_server_memory_bounded(
    server_process: _ServerProcess,
) -> None:
    before = server_process.rss()
    with socket.create_connection(server_process.address, timeout=10) as sock:
        sock.sendall(_head(b"Content-Length: 400000000\r\n") + _HEAD)
        filler = b"a" * 65536
        _send_until_answered(sock, iter([filler] * 64))  # 4 MB of the 400 announced
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"400000000 bytes > maximum 2000000 bytes" in reply
    assert server_process.rss() - before < 30 * MB


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit(
    server_process: _ServerProcess,
) -> None:
    before = server_process.rss()
    chunk = b"b" * (1 << 20)
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with socket.create_connection(server_process.address, timeout=10) as sock:
        sock.sendall(_head(b"Transfer-Encoding: chunked\r\n"))
        sock.sendall(b"%x\r\n" % len(_HEAD) + _HEAD + b"\r\n")
        _send_until_answered(sock, iter([framed] * 16))  # never ends on its own
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"maximum 2000000 bytes" in reply
    assert server_process.rss() - before < 30 * MB


def test_default_limits_are_documented_values() -> None:
    config = ServerConfig()
    aiml = AimlDialect()
    assert aiml.max_body_bytes(config) == 2_000_000
    assert aiml.max_items(config) == 2048
    assert aiml.max_chars(config) == 100_000
    assert config.max_connections == 512


def test_too_many_inputs_by_default_is_413_naming_the_limit(local_server: LocalServer) -> None:
    with local_server.client() as client:
        ok = client.post("/embeddings", json={"model": DEFAULT_MODEL, "input": ["t"] * 2048})
        over = client.post("/embeddings", json={"model": DEFAULT_MODEL, "input": ["t"] * 2049})
    assert ok.status_code == 200
    assert over.status_code == 413
    assert over.json()["message"] == "too many inputs: 2049 > maximum allowed batch size 2048"


def test_a_too_long_input_by_default_is_400_naming_the_input_and_the_limit(
    local_server: LocalServer,
) -> None:
    texts = ["fine", "x" * 100_000, "y" * 100_001]
    with local_server.client() as client:
        ok = client.post("/embeddings", json={"model": DEFAULT_MODEL, "input": texts[:2]})
        over = client.post("/embeddings", json={"model": DEFAULT_MODEL, "input": texts})
    assert ok.status_code == 200
    assert over.status_code == 400
    assert over.json()["message"] == "input[2] has 100001 characters; at most 100000 are allowed"
    assert local_server.stats["by_status"] == {"200": 1, "400": 1}


def _get_health(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    reply = _read_reply(sock)
    return reply.split(b"\r\n", 1)[0]


def test_past_max_connections_requests_get_503_until_one_closes(server_factory: Factory) -> None:
    server = server_factory(max_connections=2)
    address = ("127.0.0.1", server.port)
    first = socket.create_connection(address, timeout=10)
    second = socket.create_connection(address, timeout=10)
    try:
        assert _get_health(first) == b"HTTP/1.1 200 OK"
        assert _get_health(second) == b"HTTP/1.1 200 OK"
        with socket.create_connection(address, timeout=10) as third:
            assert _get_health(third) == b"HTTP/1.1 503 Service Unavailable"
        first.close()
        # The server sees both closes shortly; until then it still counts them (bounded wait).
        status = b""
        for _ in range(100):
            status = _get_health(second)
            if status == b"HTTP/1.1 200 OK":
                break
            second.close()
            second = socket.create_connection(address, timeout=10)
            time.sleep(0.05)
        assert status == b"HTTP/1.1 200 OK"
    finally:
        first.close()
        second.close()


def test_every_limit_is_a_flag_of_serve() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIMLAPI_API_KEY"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    flags = [
        "--max-body-bytes", "5000", "--max-items-per-request", "3",
        "--max-chars-per-item", "10", "--max-connections", "7", "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiml_bge_integrations.server", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().split(" at ", 1)[1].split(";", 1)[0]
        with httpx.Client(timeout=10, verify=False) as client:
            info = client.get(base_url.removesuffix("/v1") + "/_info").json()
            auth = {"Authorization": "Bearer any"}
            long = client.post(
                base_url + "/embeddings",
                json={"model": DEFAULT_MODEL, "input": ["x" * 11]},
                headers=auth,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert info["max_body_bytes"] == 5000
    assert info["max_client_batch_size"] == 3
    assert info["max_chars_per_item"] == 10
    assert info["max_connections"] == 7
    assert info["workers"] == 1
    assert long.status_code == 400


def test_each_server_answers_too_many_inputs_its_own_way(server_factory: Factory) -> None:
    infinity = server_factory(dialect="infinity")
    tei = server_factory(dialect="tei")
    with infinity.client() as client:
        over = client.post("/embeddings", json={"input": ["t"] * 2049})
    assert over.status_code == 422  # FastAPI's validation, as recorded from infinity
    assert over.json()["detail"][0]["msg"] == (
        "List should have at most 2048 items after validation, not 2049"
    )
    with tei.client() as client:
        over = client.post("/embeddings", json={"input": ["t"] * 33})
    assert over.status_code == 413
    assert over.json()["message"] == "batch size 33 > maximum allowed batch size 32"
