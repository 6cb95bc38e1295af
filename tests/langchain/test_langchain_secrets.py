"""The API key stays secret: repr, str, model_dump, LangChain dumpd/dumps, pickle, exceptions."""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import warnings
from typing import Any

import httpx
import pytest
from langchain_core.load import dumpd, dumps, loads
from pydantic import ValidationError

from aiml_bge_integrations import APIConnectionError, AuthenticationError
from aiml_bge_integrations.langchain import AimlBgeEmbeddings

SECRET = "sk-adapter-SECRET-9d2e41c7"


def _leaks(text: str) -> bool:
    """The key, or a recognisable piece of it (pydantic elides the middle of long values)."""
    return any(part in text for part in (SECRET, SECRET[:10], SECRET[-6:], "SECRET"))


def _everywhere(emb: AimlBgeEmbeddings) -> dict[str, str]:
    return {
        "repr": repr(emb),
        "str": str(emb),
        "format": f"{emb}",
        "model_dump": str(emb.model_dump()),
        "model_dump json": json.dumps(emb.model_dump(mode="json")),
        "model_dump_json": emb.model_dump_json(),
        "dumpd": json.dumps(dumpd(emb)),
        "dumps": dumps(emb),
        "dumps pretty": dumps(emb, pretty=True),
        "core repr": repr(emb.client) + repr(emb.async_client),
    }


def test_key_is_in_no_printed_or_serialised_form() -> None:
    emb = AimlBgeEmbeddings(api_key=SECRET, base_url="http://127.0.0.1:9/v1")
    assert emb.api_key is not None and emb.api_key.get_secret_value() == SECRET
    for where, text in _everywhere(emb).items():
        assert not _leaks(text), where


def test_key_read_from_the_environment_is_hidden_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", SECRET)
    emb = AimlBgeEmbeddings(base_url="http://127.0.0.1:9/v1")
    for where, text in _everywhere(emb).items():
        assert not _leaks(text), where


def test_dumps_writes_a_secret_reference_and_round_trips() -> None:
    emb = AimlBgeEmbeddings(
        api_key=SECRET, base_url="http://127.0.0.1:9/v1", batch_size=8, query_instruction=None
    )
    data = dumpd(emb)
    assert data["type"] == "constructor"
    assert data["id"] == ["aiml_bge_integrations", "langchain", "AimlBgeEmbeddings"]
    assert data["kwargs"]["api_key"] == {"lc": 1, "type": "secret", "id": ["AIMLAPI_API_KEY"]}
    assert data["kwargs"]["batch_size"] == 8
    assert "http_client" not in data["kwargs"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loads() is marked beta
        # langchain-core 1.2.5 and later ask which classes loads() may build.
        allowed = {"allowed_objects": [AimlBgeEmbeddings]}
        restored = loads(
            dumps(emb),
            secrets_map={"AIMLAPI_API_KEY": "restored-key"},
            valid_namespaces=["aiml_bge_integrations"],
            **(allowed if "allowed_objects" in inspect.signature(loads).parameters else {}),
        )
    assert isinstance(restored, AimlBgeEmbeddings)
    assert restored.api_key is not None
    assert restored.api_key.get_secret_value() == "restored-key"
    assert (restored.base_url, restored.batch_size) == (emb.base_url, 8)
    # A disabled instruction stays disabled (None is also the field's default).
    assert restored.query_instruction is None


def test_a_pickle_carries_no_key(local_server: Any) -> None:
    emb = AimlBgeEmbeddings(api_key=SECRET, base_url=local_server.base_url, batch_size=5)
    assert emb.client is not None and emb.async_client is not None
    blob = pickle.dumps(emb)
    assert not _leaks(blob.decode("latin-1"))
    clone = pickle.loads(blob)
    assert (clone.base_url, clone.batch_size) == (local_server.base_url, 5)


def test_pickle_leaves_injected_http_clients_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", "other")
    with httpx.Client() as http:
        emb = AimlBgeEmbeddings(api_key=SECRET, base_url="http://127.0.0.1:9/v1", http_client=http)
        clone = pickle.loads(pickle.dumps(emb))
        assert clone.http_client is None
        deep = copy.deepcopy(emb)
        assert deep.http_client is http  # a connection pool is shared, not copied
        assert deep.client is not emb.client


def test_construction_errors_do_not_show_the_key() -> None:
    for bad in ({"batch_size": "x"}, {"unknown": 1}, {"long_text": "chop"}, {"batch_size": 0}):
        with pytest.raises(ValueError) as info:
            AimlBgeEmbeddings(api_key=SECRET, **bad)
        assert not _leaks(str(info.value) + repr(info.value)), bad
        if isinstance(info.value, ValidationError):
            assert not _leaks(json.dumps(info.value.errors(include_url=False), default=str))
    # model_validate skips __init__, so the core's error arrives wrapped by pydantic, which
    # would print the whole input (the key with it) unless told not to.
    with pytest.raises(ValidationError, match="batch_size must be") as wrapped:
        AimlBgeEmbeddings.model_validate({"api_key": SECRET, "batch_size": 0})
    assert not _leaks(str(wrapped.value) + repr(wrapped.value))


def test_request_errors_do_not_show_the_key(local_server: Any) -> None:
    wrong = AimlBgeEmbeddings(api_key=SECRET, base_url=local_server.base_url, max_retries=0)
    with pytest.raises(AuthenticationError) as auth:
        wrong.embed_query("hello")
    refused = AimlBgeEmbeddings(api_key=SECRET, base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(APIConnectionError) as conn:
        refused.embed_documents(["hello"])
    wrong.close()  # its connection to the server would be left to the collector
    refused.close()
    for err in (auth.value, conn.value):
        text = " ".join([str(err), repr(err), repr(err.args), repr(getattr(err, "body", None))])
        assert not _leaks(text)
