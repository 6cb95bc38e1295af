"""The API key never shows: not in logs (httpx and httpcore at DEBUG), output, errors or pickles."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
from typing import Any

import httpx
import pytest
from core_helpers import Sleeps, async_client, sync_client, texts_of
from scripted_server import ScriptedServer

from aiml_bge_integrations import AimlBgeError, AuthenticationError, EmbeddingsClient, RateLimiter
from aiml_bge_integrations.server import FaultConfig

LOGGERS = ["httpx", "httpcore", "aiml_bge_integrations", "uvicorn", ""]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        parts.append(repr(record.__dict__))
    return "\n".join(parts)


def test_key_absent_from_debug_logs_output_and_errors(
    serve: Any, sleeps: Sleeps, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    server = serve(
        faults=FaultConfig(
            script=["503", "drop", "429", "malformed-json", "slow"], slow_seconds=2.0
        )
    )
    key = server.api_key
    wrong = "sk-wrong-" + key[::-1]
    errors: list[BaseException] = []
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    with sync_client(server, batch_size=4, max_concurrency=2, timeout=0.5) as client:
        client.embed_documents(texts_of(20))
        client.embed_query("a query")
        print(client, client.usage)

    async def run() -> None:
        async with async_client(server, batch_size=4, max_concurrency=2) as client:
            await client.embed_documents(texts_of(20))
            print(client, client.usage)

    asyncio.run(run())
    # A refused key must not come back in the error either.
    with sync_client(server, api_key=wrong) as client, pytest.raises(AuthenticationError) as info:
        client.embed_documents(["x"])
    errors.append(info.value)

    async def refused() -> None:
        async with async_client(server, api_key=wrong) as client:
            await client.embed_documents(["x"])

    with pytest.raises(AuthenticationError) as ainfo:
        asyncio.run(refused())
    errors.append(ainfo.value)

    assert sleeps.delays  # the faults were met and retried, with logging on the way
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # DEBUG really was on
    logged = everything_logged(caplog)
    out, err = capfd.readouterr()
    for secret in (key, wrong):
        assert secret not in logged
        assert secret not in out and secret not in err
        for error in errors:
            assert isinstance(error, AimlBgeError)
            for text in (str(error), repr(error), repr(error.args), repr(vars(error))):
                assert secret not in text
            assert secret.encode() not in pickle.dumps(error)


def test_key_absent_from_client_repr_and_pickle(
    local_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = local_server.api_key
    with sync_client(local_server) as client:
        client.embed_documents(["warm"])
        for text in (repr(client), str(client), repr(client.usage), repr(vars(client).get("_key"))):
            assert key not in text
        data = pickle.dumps(client)
    assert key.encode() not in data
    monkeypatch.setenv("AIMLAPI_API_KEY", key)  # a copy takes its key from the environment
    copy = pickle.loads(data)
    try:
        assert copy.embed_documents(["warm"]) is not None
    finally:
        copy.close()
    client2 = async_client(local_server)
    assert key not in repr(client2)
    assert key.encode() not in pickle.dumps(client2)


# -- copies keep their own key (issue 13, item 4) ---------------------------------------------


def test_a_pickled_client_carries_no_key_and_a_copy_shares_the_caller_objects(
    local_server: Any,
) -> None:
    limiter = RateLimiter(requests_per_minute=60_000)
    sent: list[httpx.Request] = []  # what went through the caller's own httpx client
    with httpx.Client(event_hooks={"request": [sent.append]}) as http:
        client = sync_client(local_server, http_client=http, rate_limiter=limiter)
        blob = pickle.dumps(client)
        assert local_server.api_key.encode() not in blob
        for clone in (copy.copy(client), copy.deepcopy(client)):
            before = len(sent)
            clone.embed_query("through the caller's client")
            assert len(sent) == before + 1 and clone.rate_limiter is limiter
            assert repr(clone) == repr(client)
        unpickled = pickle.loads(blob)
        before = len(sent)
        unpickled.embed_query("through a pool of its own")
        assert len(sent) == before and unpickled.rate_limiter is None
        unpickled.close()


_PICKLED_KEY = "sk-pickled-key-0123456789"


def test_a_pickled_copy_sends_its_own_key_not_the_environments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ScriptedServer() as server:
        client = EmbeddingsClient(
            api_key=_PICKLED_KEY, base_url=server.base_url, allow_insecure_http=True
        )
        data = pickle.dumps(client)
        client.close()
        assert _PICKLED_KEY.encode() not in data  # the key pickles as its fingerprint
        monkeypatch.setenv("AIMLAPI_API__PICKLED_KEY", "sk-other-key")
        with pickle.loads(data) as copy:
            copy.embed_query("q")
        sent = [r["headers"].get("Authorization") for r in server.requests if r["method"] == "POST"]
        assert sent == [f"Bearer {_PICKLED_KEY}"]
