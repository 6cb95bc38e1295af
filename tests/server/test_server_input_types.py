"""The side as a request field: servers that add a model's prompt themselves.

NIM-style ``input_type`` (``query`` / ``passage`` / ``document``), Cohere-style
(``search_query`` / ``search_document``) and TEI's ``prompt_name``: the server puts the side's
prefix in front of every input, so the vector of a query is exactly the vector of
``"query: " + text``, and a query's vector differs from a passage's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import HashingEmbedder, LocalServer

Factory = Callable[..., LocalServer]
TEXTS = ["Laura is a DJ.", "The cat sat on the mat"]


def _post(server: LocalServer, **fields: Any) -> Any:
    body = {"model": DEFAULT_MODEL, "input": TEXTS, "encoding_format": "base64", **fields}
    with server.client() as client:
        return client.post("/embeddings", json=body)


def _vectors(response: Any) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    rows = sorted(response.json()["data"], key=lambda item: item["index"])
    return np.stack([np.frombuffer(base64.b64decode(r["embedding"]), "<f4") for r in rows])


def _expected(prefix: str) -> np.ndarray[Any, Any]:
    return HashingEmbedder().embed([prefix + t for t in TEXTS]).astype("<f4")


@pytest.mark.parametrize(
    ("dialect", "field", "value", "prefix"),
    [
        ("nim", "input_type", "query", "query: "),
        ("nim", "input_type", "passage", "passage: "),
        ("nim", "input_type", "document", "passage: "),
        ("cohere-compat", "input_type", "search_query", "search_query: "),
        ("cohere-compat", "input_type", "search_document", "search_document: "),
        ("tei", "prompt_name", "query", "query: "),
        ("tei", "prompt_name", "passage", "passage: "),
    ],
)
def test_the_side_puts_its_prefix_in_front_of_every_input(
    server_factory: Factory, dialect: str, field: str, value: str, prefix: str
) -> None:
    server = server_factory(dialect=dialect)
    response = _post(server, **{field: value})
    assert np.array_equal(_vectors(response), _expected(prefix))
    # The prefix is counted, as the model reads it.
    plain = server.app.state.aiml.tokens.count(TEXTS)
    with_prefix = server.app.state.aiml.tokens.count([prefix + t for t in TEXTS])
    assert response.json()["usage"]["prompt_tokens"] == sum(with_prefix) > sum(plain)


def test_query_and_passage_vectors_differ_but_stay_close(server_factory: Factory) -> None:
    server = server_factory(dialect="nim")
    query = _vectors(_post(server, input_type="query"))
    passage = _vectors(_post(server, input_type="passage"))
    cosines = np.einsum("ij,ij->i", query, passage)
    assert (cosines < 0.99).all() and (cosines > 0.5).all()


def test_without_the_field_each_server_does_what_it_does(server_factory: Factory) -> None:
    # The e5 server embeds every input as a query; TEI and the gateway add nothing.
    assert np.array_equal(_vectors(_post(server_factory(dialect="nim"))), _expected("query: "))
    for dialect in ("tei", "cohere-compat"):
        assert np.array_equal(_vectors(_post(server_factory(dialect=dialect))), _expected(""))


def test_servers_without_the_field_ignore_it(server_factory: Factory) -> None:
    for dialect in ("aiml", "openai", "vllm", "infinity"):
        server = server_factory(dialect=dialect)
        sent = _post(server, input_type="query", prompt_name="query")
        assert np.array_equal(_vectors(sent), _expected(""))


def test_an_unknown_side_is_refused_naming_the_field(server_factory: Factory) -> None:
    nim = _post(server_factory(dialect="nim"), input_type="search_query")
    assert nim.status_code == 400
    assert nim.json()["error"]["param"] == "input_type"
    assert '"query" | "passage" | "document"' in nim.json()["error"]["message"]
    tei = _post(server_factory(dialect="tei"), prompt_name="summary")
    assert tei.status_code == 413
    assert tei.json()["type"] == "Validation" and "prompt_name" in tei.json()["message"]
    wrong_type = _post(server_factory(dialect="cohere-compat"), input_type=["search_query"])
    assert wrong_type.status_code == 400
