"""What the server publishes about itself, in each real server's shape: TEI's ``GET /info``,
vLLM's and infinity's ``GET /v1/models``; the published limits are the ones it applies."""

from __future__ import annotations

from collections.abc import Callable

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import LocalServer

Factory = Callable[..., LocalServer]

TEI_INFO_KEYS = {
    "model_id", "model_sha", "model_dtype", "model_type", "max_concurrent_requests",
    "max_input_length", "max_batch_tokens", "max_batch_requests", "max_client_batch_size",
    "auto_truncate", "tokenization_workers", "version", "sha", "docker_label",
}  # fmt: skip


def test_tei_info_has_teis_fields_with_the_limits_applied(server_factory: Factory) -> None:
    server = server_factory(dialect="tei", max_items_per_request=7, max_tokens_per_item=256)
    with server.client() as client:
        info = client.get(server.root_url + "/info").json()
        over = client.post("/embeddings", json={"input": ["t"] * 8})
    assert set(info) >= TEI_INFO_KEYS
    assert info["model_id"] == DEFAULT_MODEL
    assert info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["max_client_batch_size"] == 7
    assert info["max_input_length"] == 256
    assert isinstance(info["max_concurrent_requests"], int)
    assert over.status_code == 413
    assert over.json()["message"] == "batch size 8 > maximum allowed batch size 7"


def test_vllm_models_carry_max_model_len(server_factory: Factory) -> None:
    server = server_factory(dialect="vllm")
    with server.client() as client:
        body = client.get("/models").json()
    (card,) = body["data"]
    assert body["object"] == "list"
    assert card["id"] == card["root"] == DEFAULT_MODEL
    assert card["owned_by"] == "vllm" and card["parent"] is None
    assert card["max_model_len"] == 512
    assert card["permission"][0]["object"] == "model_permission"


def test_infinity_models_have_infinitys_fields(server_factory: Factory) -> None:
    server = server_factory(dialect="infinity")
    with server.client() as client:
        body = client.get("/models").json()
    (card,) = body["data"]
    assert set(card) == {"id", "stats", "object", "owned_by", "created", "backend", "capabilities"}
    assert set(card["stats"]) == {
        "queue_fraction",
        "queue_absolute",
        "results_pending",
        "batch_size",
    }
    assert card["capabilities"] == ["embed"]


def test_a_token_budget_is_published_and_applied(server_factory: Factory) -> None:
    server = server_factory(dialect="tei", max_batch_tokens=20)
    texts = ["word " * 8, "word " * 8]  # 10 tokens each
    with server.client() as client:
        info = client.get(server.root_url + "/info").json()
        fits = client.post("/embeddings", json={"input": texts})
        over = client.post("/embeddings", json={"input": [*texts, "word"]})
    assert info["max_batch_tokens"] == 20
    assert fits.status_code == 200 and fits.json()["usage"]["prompt_tokens"] == 20
    assert over.status_code == 413
    assert over.json()["message"] == "too many tokens in one request: 23 > maximum 20"


def test_without_a_budget_tei_publishes_its_default_and_refuses_nothing(
    server_factory: Factory,
) -> None:
    tei = server_factory(dialect="tei")
    aiml = server_factory()
    with tei.client() as client:
        assert client.get(tei.root_url + "/info").json()["max_batch_tokens"] == 16384
        many = client.post("/embeddings", json={"input": ["word " * 600] * 32})
    assert many.status_code == 200
    assert many.json()["usage"]["prompt_tokens"] == 32 * 602 > 16384
    with aiml.client() as client:
        assert client.get(aiml.root_url + "/_info").json()["max_batch_tokens"] is None
        assert client.get(aiml.root_url + "/info").status_code == 404


def test_info_answers_only_where_the_real_server_has_it(server_factory: Factory) -> None:
    # A client that asks GET /info of vLLM or infinity gets a 404 there, not TEI's facts.
    for dialect, status in [("tei", 200), ("vllm", 404), ("infinity", 404), ("openai", 404)]:
        server = server_factory(dialect=dialect)
        with server.client() as client:
            assert client.get(server.root_url + "/info").status_code == status, dialect
            facts = client.get(server.root_url + "/_info").json()
        assert facts["dialect"] == dialect  # the stand-in's own facts, everywhere
