"""Each side gets its own prompt and input type: what is sent, captured from the request.

Every request goes through the public ``http_client`` seam (``httpx.MockTransport``), so
the texts and fields are read from the very bytes the server would get.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient
from aiml_bge_integrations._models import PROFILES, profile_for

KEY = "sk-sides-test"
BASE = "http://127.0.0.1:9/v1"


class Capture:
    """A transport that records every request body and answers with vectors of the right width."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        self.bodies.append(body)
        profile = profile_for(body["model"])
        dim = (profile.dimension if profile else None) or 8
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5] * dim}
            for i in range(len(body["input"]))
        ]
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"]})

    def sent(self) -> tuple[list[str], str | None]:
        """The texts and the input_type (None: no such field) of the one request so far."""
        assert len(self.bodies) == 1, self.bodies
        body = self.bodies.pop()
        return body["input"], body.get("input_type")


def _client(capture: Capture, **settings: Any) -> EmbeddingsClient:
    http = httpx.Client(transport=httpx.MockTransport(capture))
    return EmbeddingsClient(api_key=KEY, base_url=BASE, http_client=http, **settings)


FAMILY_MODELS = [(family.name, family.examples[0]) for family in PROFILES]


@pytest.mark.parametrize(("family", "model"), FAMILY_MODELS, ids=[f for f, _ in FAMILY_MODELS])
def test_each_family_sends_its_own_prompt_on_each_side_and_no_input_type(
    family: str, model: str
) -> None:
    profile = profile_for(model)
    assert profile is not None and profile.family == family
    capture = Capture()
    with _client(capture, model=model) as client:
        client.embed_documents(["a passage"])
        texts, input_type = capture.sent()
        assert texts == [(profile.document_prompt or "") + "a passage"]
        assert input_type is None
        client.embed_query("a question")
        texts, input_type = capture.sent()
        assert texts == [(profile.query_prompt or "") + "a question"]
        assert input_type is None


@pytest.mark.parametrize(
    ("model", "query", "document"),
    [
        ("intfloat/multilingual-e5-small", "query: q", "passage: d"),
        ("nomic-ai/nomic-embed-text-v1.5", "search_query: q", "search_document: d"),
        (
            "BAAI/bge-small-en-v1.5",
            "Represent this sentence for searching relevant passages: q",
            "d",
        ),
        ("BAAI/bge-m3", "q", "d"),
        ("sentence-transformers/all-MiniLM-L6-v2", "q", "d"),
        ("someone/unknown-model", "q", "d"),
    ],
)
def test_the_prompts_as_written_on_the_models_cards(model: str, query: str, document: str) -> None:
    capture = Capture()
    with _client(capture, model=model) as client:
        client.embed_documents(["d"])
        assert capture.sent()[0] == [document]
        client.embed_query("q")
        assert capture.sent()[0] == [query]


def test_the_input_types_go_with_their_side_only_and_the_prompts_can_be_turned_off() -> None:
    # A server that adds e5's prefixes itself: input types, no instructions.
    capture = Capture()
    settings: dict[str, Any] = {
        "model": "intfloat/multilingual-e5-small",
        "query_instruction": None,
        "document_instruction": None,
        "query_input_type": "query",
        "document_input_type": "passage",
    }
    with _client(capture, **settings) as client:
        client.embed_documents(["d1", "d2"])
        assert capture.sent() == (["d1", "d2"], "passage")
        client.embed_query("q")
        assert capture.sent() == (["q"], "query")
        list(client.iter_embeddings(["d3"]))
        assert capture.sent() == (["d3"], "passage")
        list(client.iter_chunks(["d4"], 1))
        assert capture.sent() == (["d4"], "passage")
    # One side only: the other sends no field at all.
    with _client(capture, document_input_type="search_document") as client:
        client.embed_query("q")
        body = capture.bodies.pop()
        assert "input_type" not in body
        client.embed_documents(["d"])
        assert capture.bodies.pop()["input_type"] == "search_document"


def test_the_document_instruction_is_on_every_document_path_and_counted_by_the_policy() -> None:
    capture = Capture()
    with _client(capture, model="BAAI/bge-small-en-v1.5", document_instruction="doc: ") as client:
        list(client.iter_embeddings(["a", "b"]))
        assert capture.sent()[0] == ["doc: a", "doc: b"]
        list(client.iter_chunks(["c"], 1))
        assert capture.sent()[0] == ["doc: c"]
        # 510 words fit BGE's 512-token window alone ([CLS] and [SEP] make 512), not with the
        # prefix: the text sent is cut to fit, prefix included.
        with pytest.warns(UserWarning):
            client.embed_documents([" ".join(["word"] * 510)])
        sent = capture.sent()[0][0]
        assert sent.startswith("doc: word") and sent.count("word") < 510


def test_the_async_client_sends_the_same_sides() -> None:
    capture = Capture()

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(capture))
        async with AsyncEmbeddingsClient(
            api_key=KEY,
            base_url=BASE,
            http_client=http,
            model="nomic-ai/nomic-embed-text-v1.5",
            query_input_type="search_query",
            document_input_type="search_document",
        ) as client:
            await client.embed_documents(["d"])
            assert capture.sent() == (["search_document: d"], "search_document")
            await client.embed_query("q")
            assert capture.sent() == (["search_query: q"], "search_query")
        await http.aclose()

    asyncio.run(run())


SIDES = {
    "model": "intfloat/e5-base-v2",
    "query_input_type": "query",
    "document_input_type": "passage",
}


def test_langchain_maps_embed_query_and_embed_documents_onto_the_two_sides() -> None:
    langchain = pytest.importorskip("aiml_bge_integrations.langchain")
    capture = Capture()
    http = httpx.Client(transport=httpx.MockTransport(capture))
    async_http = httpx.AsyncClient(transport=httpx.MockTransport(capture))
    emb = langchain.AimlBgeEmbeddings(
        api_key=KEY, base_url=BASE, http_client=http, http_async_client=async_http, **SIDES
    )
    emb.embed_documents(["d"])
    assert capture.sent() == (["passage: d"], "passage")
    emb.embed_query("q")
    assert capture.sent() == (["query: q"], "query")
    asyncio.run(emb.aembed_documents(["d"]))
    assert capture.sent() == (["passage: d"], "passage")
    asyncio.run(emb.aembed_query("q"))
    assert capture.sent() == (["query: q"], "query")


def test_llama_index_maps_the_query_and_text_paths_onto_the_two_sides() -> None:
    llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
    capture = Capture()
    http = httpx.Client(transport=httpx.MockTransport(capture))
    emb = llama_index.AimlBgeEmbedding(api_key=KEY, base_url=BASE, http_client=http, **SIDES)
    emb.get_text_embedding("d")
    assert capture.sent() == (["passage: d"], "passage")
    emb.get_text_embedding_batch(["d"])
    assert capture.sent() == (["passage: d"], "passage")
    emb.get_query_embedding("q")
    assert capture.sent() == (["query: q"], "query")


# -- messages and blank texts that are true for the server in use -----------------------------


def test_blank_texts_are_sent_where_the_profile_or_the_setting_says_the_server_takes_them() -> None:
    from aiml_bge_integrations.errors import InvalidInputError

    capture = Capture()
    with _client(capture, model="sentence-transformers/all-MiniLM-L6-v2") as client:
        client.embed_documents(["", "   ", "x"])
        assert capture.sent()[0] == ["", "   ", "x"]
        list(client.iter_embeddings([""]))
        assert capture.sent()[0] == [""]
        client.embed_query(" ")
        assert capture.sent()[0] == [" "]
    with _client(capture, model="BAAI/bge-small-en-v1.5") as client:
        with pytest.raises(InvalidInputError, match="allow_blank_texts=True"):
            client.embed_documents(["", "x"])
        assert not capture.bodies
    with _client(capture, model="BAAI/bge-small-en-v1.5", allow_blank_texts=True) as client:
        client.embed_documents(["", "x"])
        assert capture.sent()[0] == ["", "x"]
    with (
        _client(
            capture, model="sentence-transformers/all-MiniLM-L6-v2", allow_blank_texts=False
        ) as client,
        pytest.raises(InvalidInputError),
    ):
        client.embed_documents([""])


def test_the_mismatch_warning_is_said_once_with_no_advice_and_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import warnings

    from aiml_bge_integrations.errors import ModelMismatchWarning

    def served_other(request: httpx.Request) -> httpx.Response:
        n = len(orjson.loads(request.content)["input"])
        data = [{"index": i, "embedding": [0.5] * 384} for i in range(n)]
        return httpx.Response(200, json={"data": data, "model": "intfloat/e5-small-passage"})

    http = httpx.Client(transport=httpx.MockTransport(served_other))
    with (
        warnings.catch_warnings(record=True) as seen,
        EmbeddingsClient(
            api_key=KEY, base_url=BASE, http_client=http, model="intfloat/e5-small-query"
        ) as client,
    ):
        warnings.simplefilter("always")
        client.embed_documents(["a"])
        client.embed_query("b")
    mismatches = [w for w in seen if issubclass(w.category, ModelMismatchWarning)]
    assert len(mismatches) == 1
    text = str(mismatches[0].message)
    assert "the vectors are those of 'intfloat/e5-small-passage'" in text
    for advice in ("Set model", "set model", "query_instruction="):
        assert advice not in text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_missing_key_message_fits_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiml_bge_integrations.errors import MissingAPIKeyError

    monkeypatch.delenv("AIMLAPI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError) as local:
        EmbeddingsClient(base_url="http://127.0.0.1:9/v1")
    assert str(local.value).startswith(
        "no API key: pass api_key=... or set AIMLAPI_API_KEY. A server that checks no key"
    )
    with pytest.raises(MissingAPIKeyError) as hosted:
        EmbeddingsClient()
    assert "The AI/ML API needs your key" in str(hosted.value)
    assert "aiml-bge serve" not in str(local.value) + str(hosted.value)


def test_a_token_policy_that_cannot_apply_is_said_once() -> None:
    import warnings

    capture = Capture()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(2):
            _client(capture, model="acme/sides-test-embedder", long_text="error").close()
        _client(capture, model="acme/sides-test-embedder").close()  # the default: not asked
    notices = [str(w.message) for w in seen if "long_text='error' does not apply" in str(w.message)]
    assert len(notices) == 1 and "is not a model the package knows" in notices[0]
