"""The AI/ML API as it is: its public deprecation feed, and its free tier's hourly quota."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import LocalServer
from aiml_bge_integrations.server.dialects import FREE_TIER_MESSAGE

Factory = Callable[..., LocalServer]
ENTRY_KEYS = {"id", "aliases", "status", "deprecated_at", "shutdown_at", "replaced_by", "reason"}


def test_the_feed_lists_the_retired_model_that_answers_404(aiml_server: LocalServer) -> None:
    retired = "BAAI/bge-large-en-v1.5"
    with aiml_server.client(key=None) as anonymous, aiml_server.client() as client:
        feed = anonymous.get("/models/deprecations")  # public: no key
        gone = client.post("/embeddings", json={"model": retired, "input": "x"})
    assert feed.status_code == 200
    assert feed.headers["cache-control"] == "public, max-age=300"
    assert feed.headers["etag"].startswith('W/"')
    body = feed.json()
    assert body["object"] == "list"
    assert all(set(entry) == ENTRY_KEYS for entry in body["data"])
    entries = {entry["id"]: entry for entry in body["data"]}
    assert entries[retired]["status"] == "withdrawn"
    assert entries[retired]["replaced_by"] == "text-embedding-3-large"
    assert entries[retired]["shutdown_at"] == "2026-03-30"
    assert DEFAULT_MODEL not in entries  # served here, so not listed
    assert gone.status_code == 404
    assert "deprecated and no longer supported" in gone.json()["message"]


@pytest.mark.parametrize(
    "path",
    ["/v1/models/deprecated", "/models/deprecations", "/api/v1/models/deprecations"],
)
def test_the_feed_answers_at_every_documented_path(aiml_server: LocalServer, path: str) -> None:
    with aiml_server.client(key=None) as client:
        response = client.get(aiml_server.root_url + path)
    assert response.status_code == 200 and response.json()["data"]


def test_the_feed_filters_by_status_and_since(aiml_server: LocalServer) -> None:
    with aiml_server.client(key=None) as client:
        withdrawn = client.get("/models/deprecations", params={"status": "withdrawn"}).json()
        recent = client.get("/models/deprecations", params={"since": "2026-06-01"}).json()
    assert withdrawn["data"] and {e["status"] for e in withdrawn["data"]} == {"withdrawn"}
    assert recent["data"] and all(e["deprecated_at"] >= "2026-06-01" for e in recent["data"])


def test_every_retired_model_is_in_the_feed(server_factory: Factory) -> None:
    server = server_factory(retired_models=["old/model", "BAAI/bge-large-en-v1.5"])
    with server.client() as client:
        entries = {e["id"]: e for e in client.get("/models/deprecations").json()["data"]}
    assert entries["old/model"]["status"] == "withdrawn"
    assert entries["old/model"]["replaced_by"] is None
    assert entries["BAAI/bge-large-en-v1.5"]["status"] == "withdrawn"


def test_other_servers_have_no_feed(server_factory: Factory) -> None:
    server = server_factory(dialect="openai")
    with server.client() as client:
        assert client.get("/models/deprecations").status_code == 404


def test_the_free_tier_quota_is_a_429_that_retrying_does_not_clear(
    server_factory: Factory,
) -> None:
    server = server_factory(free_tier_requests_per_hour=2)
    body = {"model": DEFAULT_MODEL, "input": "x"}
    with server.client() as client:
        replies = [client.post("/embeddings", json=body) for _ in range(5)]
    assert [r.status_code for r in replies] == [200, 200, 429, 429, 429]
    for refused in replies[2:]:
        assert refused.json()["message"] == FREE_TIER_MESSAGE
        assert refused.json()["statusCode"] == 429
        assert "retry-after" not in refused.headers
    assert "You've reached your free limit for the hour" in FREE_TIER_MESSAGE
    assert server.stats["by_status"] == {"200": 2, "429": 3}
