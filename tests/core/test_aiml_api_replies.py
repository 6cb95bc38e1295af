"""The AI/ML API as it is: the free tier's used-up quota, and the deprecation feed after a 404.

Against a small scripted server on 127.0.0.1 (tests/support/scripted_server.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from scripted_server import ScriptedServer

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations.errors import ModelNotFoundError, QuotaExceededError, RateLimitError

KEY = "sk-replies-test-key"
FREE_TIER = (
    "Free-tier limit: You've reached your free limit for the hour. Get AI/ML Subscription "
    "to use API, visit https://aimlapi.com/app/billing/ !"
)
FEED = {
    "data": [
        {
            "id": "vendor/old-embedder",
            "status": "withdrawn",
            "shutdown_at": "2026-01-15",
            "replaced_by": "vendor/new-embedder",
        }
    ]
}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def _client(server: ScriptedServer, **settings: object) -> EmbeddingsClient:
    client = EmbeddingsClient(api_key=KEY, base_url=server.base_url, **settings)  # type: ignore[arg-type]
    client.retry_policy.sleep = lambda seconds: None
    return client


def test_the_free_tier_quota_is_not_retried_and_says_when_it_resets(
    server: ScriptedServer,
) -> None:
    server.script.append((429, {"message": FREE_TIER, "statusCode": 429}, {"Retry-After": "1200"}))
    with _client(server, model="custom-embedder") as client:
        with pytest.raises(QuotaExceededError) as info:
            client.embed_documents(["a"])
        assert client.usage.retries == 0
    assert len(server.posts()) == 1
    err = info.value
    assert isinstance(err, RateLimitError) and err.status_code == 429
    assert err.retry_after == 1200 and err.resets_at is not None
    assert "not retried" in str(err) and "resets at" in str(err) and "20 min" in str(err)


def test_a_passing_429_is_still_retried(server: ScriptedServer) -> None:
    server.script.append((429, {"message": "Too many requests"}, {}))
    with _client(server, model="custom-embedder") as client:
        assert len(client.embed_documents(["a"])) == 1
        assert client.usage.retries_by_cause == {"429": 1}


def test_a_404_for_the_model_names_the_replacement_from_the_feed(server: ScriptedServer) -> None:
    server.pages["/v1/models/deprecations"] = (200, FEED)
    for _ in range(2):
        server.script.append((404, {"message": "Model vendor/old-embedder not found"}, {}))
    # Only the feed's GET is counted here: the client asks nothing else.
    client = _client(server, model="vendor/old-embedder", max_concurrency=1, discover_limits=False)
    with client:
        for _ in range(2):
            with pytest.raises(ModelNotFoundError) as info:
                client.embed_documents(["a"])
            message = str(info.value)
            assert "'vendor/new-embedder'" in message and "withdrawn" in message
            assert message.count("Its replacement") == 1
    gets = [r for r in server.requests if r["method"] == "GET"]
    assert [r["path"] for r in gets] == ["/v1/models/deprecations"]  # once per client
    headers = {k.lower(): v for k, v in gets[0]["headers"].items()}
    assert "authorization" not in headers and KEY not in str(gets[0])


def test_the_async_client_reads_the_feed_too(server: ScriptedServer) -> None:
    server.pages["/v1/models/deprecations"] = (200, FEED)
    server.script.append((404, {"message": "model not found"}, {}))

    async def run() -> str:
        client = AsyncEmbeddingsClient(
            api_key=KEY, base_url=server.base_url, model="vendor/old-embedder"
        )
        async with client:
            with pytest.raises(ModelNotFoundError) as info:
                await client.embed_query("q")
            return str(info.value)

    assert "'vendor/new-embedder'" in asyncio.run(run())


@pytest.mark.parametrize("page", [None, (500, {"message": "down"}), (200, b"not json")])
def test_a_feed_that_cannot_be_read_leaves_the_error_as_it_was(
    server: ScriptedServer, page: tuple[int, object] | None
) -> None:
    if page is not None:
        server.pages["/v1/models/deprecations"] = page
    server.script.append((404, {"message": "model not found"}, {}))
    with (
        _client(server, model="vendor/old-embedder") as client,
        pytest.raises(ModelNotFoundError) as info,
    ):
        client.embed_documents(["a"])
    assert "replacement" not in str(info.value)


# -- the local server's recorded feed and free-tier quota -------------------------------------


def test_the_local_servers_feed_names_the_replacement_of_a_retired_model() -> None:
    from aiml_bge_integrations.server import LocalServer
    from aiml_bge_integrations.server.deprecations import feed_entries

    with LocalServer() as local:
        retired = local.config.retired_models[0]
        (entry,) = [
            e for e in feed_entries(local.config.served_models, [retired]) if e["id"] == retired
        ]
        with (
            EmbeddingsClient(
                api_key=local.api_key, base_url=local.base_url, model=retired
            ) as client,
            pytest.raises(ModelNotFoundError) as info,
        ):
            client.embed_documents(["a"])
    if entry.get("replaced_by"):
        assert f"Its replacement is {entry['replaced_by']!r}" in str(info.value)
    assert "withdrawn" in str(info.value)


def test_the_local_servers_free_tier_quota_is_a_quota_error() -> None:
    from aiml_bge_integrations.server import LocalServer

    with (
        LocalServer(free_tier_requests_per_hour=1) as local,
        EmbeddingsClient(
            api_key=local.api_key, base_url=local.base_url, max_concurrency=1
        ) as client,
    ):
        client.embed_documents(["within the quota"])
        with pytest.raises(QuotaExceededError):
            client.embed_documents(["past it"])
        assert client.usage.retries == 0 and client.usage.requests == 2
