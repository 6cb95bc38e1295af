"""Fault injection, each kind seen by a plain httpx client; seeded sequences repeat."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import FAULT_KINDS, FaultConfig, HashingEmbedder, LocalServer

MODEL = DEFAULT_MODEL


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}


Factory = Callable[..., LocalServer]
TEXTS = ["one text", "two texts", "three texts here", "four", "five five"]


def _one(
    server: LocalServer, kind: str | None, body: dict[str, Any] | None = None, timeout: float = 10.0
) -> httpx.Response:
    server.config.faults = FaultConfig(script=[kind], slow_seconds=1.0)
    with server.client(timeout=timeout) as client:
        return client.post("/embeddings", json=body or embed_body(TEXTS))


def test_fault_kinds_are_the_documented_ones() -> None:
    assert set(FAULT_KINDS) == {
        "429", "429-retry-after", "429-retry-after-date", "500", "502", "503", "504",
        "drop", "slow", "malformed-json", "shuffle", "missing-item", "duplicate-index", "wrong-dimension",
    }  # fmt: skip


def test_429_without_retry_after(aiml_server: LocalServer) -> None:
    response = _one(aiml_server, "429")
    assert response.status_code == 429
    assert response.json()["message"] == "Too Many Requests"
    assert "retry-after" not in response.headers
    assert aiml_server.stats["faults"] == {"429": 1}
    assert aiml_server.stats["rate_limited"] == 0  # a fault, not a limit


def test_429_retry_after_seconds(aiml_server: LocalServer) -> None:
    response = _one(aiml_server, "429-retry-after")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    aiml_server.config.faults = FaultConfig(script=["429-retry-after"], retry_after_seconds=0.25)
    with aiml_server.client() as client:
        assert client.post("/embeddings", json=embed_body("x")).headers["retry-after"] == "0.25"


def test_429_retry_after_http_date(aiml_server: LocalServer) -> None:
    response = _one(aiml_server, "429-retry-after-date")
    assert response.status_code == 429
    when = parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert time.time() < when <= time.time() + 2.5


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors(aiml_server: LocalServer, status: int) -> None:
    response = _one(aiml_server, str(status))
    assert response.status_code == status
    body = response.json()
    assert body["statusCode"] == status and body["path"] == "/v1/embeddings"
    if status == 504:
        assert body["message"] == "Generation timeout"


def test_drop_is_a_transport_error(aiml_server: LocalServer) -> None:
    aiml_server.config.faults = FaultConfig(script=["drop", None])
    with aiml_server.client() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            client.post("/embeddings", json=embed_body(TEXTS))
        # The next request on the same client gets a fresh connection and a healthy reply.
        assert client.post("/embeddings", json=embed_body(TEXTS)).status_code == 200
    assert aiml_server.stats["faults"] == {"drop": 1}
    assert aiml_server.stats["by_status"] == {"200": 1}


def test_drop_with_streaming_read_is_a_read_error(aiml_server: LocalServer) -> None:
    aiml_server.config.faults = FaultConfig(script=["drop"], drop_fraction=0.1)
    with (
        aiml_server.client() as client,
        client.stream("POST", "/embeddings", json=embed_body(TEXTS)) as response,
    ):
        assert response.status_code == 200
        declared = int(response.headers["content-length"])
        received = 0
        with pytest.raises(httpx.TransportError):
            for chunk in response.iter_raw():
                received += len(chunk)
    assert received < declared


def test_slow_outlasts_the_client_timeout(aiml_server: LocalServer) -> None:
    # The client gives up (0.3 s) while the server holds the reply back (1 s): no reply is
    # counted below.
    with pytest.raises(httpx.ReadTimeout):
        _one(aiml_server, "slow", timeout=0.3)
    deadline = time.monotonic() + 2.0
    while aiml_server.stats["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    # The server noticed the client leave: it stopped waiting and counted no reply.
    stats = aiml_server.stats.snapshot()
    assert stats["in_flight"] == 0
    assert stats["faults"] == {"slow": 1}
    assert stats["by_status"] == {} and stats["ok"] == 0


def test_slow_reply_is_healthy_when_the_client_waits(aiml_server: LocalServer) -> None:
    aiml_server.config.faults = FaultConfig(script=["slow"], slow_seconds=0.3)
    started = time.perf_counter()
    with aiml_server.client() as client:
        response = client.post("/embeddings", json=embed_body(TEXTS))
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.3
    assert aiml_server.stats["ok"] == 1


def test_malformed_json(aiml_server: LocalServer) -> None:
    response = _one(aiml_server, "malformed-json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)
    assert aiml_server.stats["ok"] == 0


def _vectors_by_index(body: dict[str, Any]) -> dict[int, np.ndarray[Any, Any]]:
    return {d["index"]: np.array(d["embedding"], dtype="<f4") for d in body["data"]}


def test_shuffle_keeps_indices_right(aiml_server: LocalServer) -> None:
    body = _one(aiml_server, "shuffle").json()
    indices = [d["index"] for d in body["data"]]
    assert sorted(indices) == list(range(len(TEXTS)))
    assert indices != sorted(indices)
    expected = HashingEmbedder().embed(TEXTS).astype("<f4")
    for index, vec in _vectors_by_index(body).items():
        np.testing.assert_array_equal(vec, expected[index])


def test_missing_item(aiml_server: LocalServer) -> None:
    body = _one(aiml_server, "missing-item").json()
    assert len(body["data"]) == len(TEXTS) - 1
    assert body["usage"]["prompt_tokens"] > 0


def test_duplicate_index(aiml_server: LocalServer) -> None:
    body = _one(aiml_server, "duplicate-index").json()
    indices = [d["index"] for d in body["data"]]
    assert len(indices) == len(TEXTS)
    assert len(set(indices)) == len(TEXTS) - 1


def test_duplicate_index_with_one_input(aiml_server: LocalServer) -> None:
    body = _one(aiml_server, "duplicate-index", embed_body("single")).json()
    assert [d["index"] for d in body["data"]] == [0, 0]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_wrong_dimension(aiml_server: LocalServer, encoding: str) -> None:
    body = _one(aiml_server, "wrong-dimension", embed_body(TEXTS, encoding_format=encoding)).json()
    if encoding == "base64":
        lengths = sorted(len(base64.b64decode(d["embedding"])) // 4 for d in body["data"])
    else:
        lengths = sorted(len(d["embedding"]) for d in body["data"])
    assert lengths == [767] + [768] * (len(TEXTS) - 1)


def test_script_then_rates_then_healthy(aiml_server: LocalServer) -> None:
    aiml_server.config.faults = FaultConfig(script=["503", None, "500"])
    with aiml_server.client() as client:
        statuses = [client.post("/embeddings", json=embed_body("x")).status_code for _ in range(5)]
    assert statuses == [503, 200, 500, 200, 200]
    stats = aiml_server.stats.snapshot()
    assert stats["faults"] == {"503": 1, "500": 1}
    assert stats["ok"] == 3


def test_faults_skip_requests_that_fail_validation(aiml_server: LocalServer) -> None:
    aiml_server.config.faults = FaultConfig(script=["503"])
    with aiml_server.client() as client:
        assert client.post("/embeddings", json=embed_body([])).status_code == 400
        assert client.post("/embeddings", json=embed_body("x")).status_code == 503


def _statuses(server: LocalServer, n: int) -> list[int]:
    with server.client() as client:
        return [client.post("/embeddings", json=embed_body("x")).status_code for _ in range(n)]


def test_seeded_rates_repeat_identically(server_factory: Factory) -> None:
    def run(seed: int) -> list[int]:
        rates = {"429": 0.2, "503": 0.2, "500": 0.1}
        return _statuses(server_factory(faults=FaultConfig(rates=rates, seed=seed)), 40)

    first, second, other = run(1), run(1), run(2)
    assert first == second
    assert first != other
    assert {429, 503, 500, 200} <= set(first)


def test_assigning_a_new_fault_config_restarts_the_sequence(aiml_server: LocalServer) -> None:
    config = FaultConfig(rates={"503": 0.5}, seed=3)
    aiml_server.config.faults = config
    first = _statuses(aiml_server, 12)
    aiml_server.config.faults = FaultConfig(rates={"503": 0.5}, seed=3)
    assert _statuses(aiml_server, 12) == first
    aiml_server.config.faults = None
    assert _statuses(aiml_server, 3) == [200, 200, 200]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rates": {"418": 0.1}},
        {"script": ["boom"]},
        {"rates": {"429": 0.7, "503": 0.6}},
        {"rates": {"429": -0.1}},
        {"slow_seconds": -1},
        {"drop_fraction": 1.0},
    ],
)
def test_bad_fault_configs_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(**kwargs)
