"""A copy of a client or adapter sends the original's key, or says why not; never another key.

The local server accepts only its own key, so a copy that sent ``AIMLAPI_API_KEY``'s other
key would get a 401 (issue 13, item 4). In the same process every kind of copy (copy,
deepcopy, model_copy, pickle) finds the key, whatever the environment holds. The key never
travels in a pickle (its fingerprint does): in a fresh process (as a spawned worker of
LlamaIndex's ``IngestionPipeline(num_workers=...)`` is) the copy finds the key in
``AIMLAPI_API_KEY`` when it holds the same key; with another key there, or none, the copy
loads but its first call raises ``MissingAPIKeyError`` saying why, and nothing is sent.
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient

OTHER_ACCOUNT = "sk-another-account-key"

_CHILD = """
import pickle, sys
obj = pickle.loads(sys.stdin.buffer.read())
embed = getattr(obj, "embed_query", None) or getattr(obj, "get_query_embedding")
try:
    print(len(embed("from another process")))
except Exception as err:
    print(type(err).__name__, err)
"""


def _langchain(server: Any) -> Any:
    module = pytest.importorskip("aiml_bge_integrations.langchain")
    return module.AimlBgeEmbeddings(api_key=server.api_key, base_url=server.base_url)


def _llama_index(server: Any) -> Any:
    module = pytest.importorskip("aiml_bge_integrations.llama_index")
    return module.AimlBgeEmbedding(api_key=server.api_key, base_url=server.base_url)


def _client(server: Any) -> Any:
    return EmbeddingsClient(api_key=server.api_key, base_url=server.base_url)


def _async_client(server: Any) -> Any:
    return AsyncEmbeddingsClient(api_key=server.api_key, base_url=server.base_url)


COPIES: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "model_copy": lambda obj: obj.model_copy(),
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


async def _both_ways(obj: Any) -> int:
    """Embed one query each way the object can (sync, async); returns the requests made."""
    sent = 0
    sync = getattr(obj, "get_query_embedding", None) or getattr(obj, "embed_query", None)
    if sync is not None and not isinstance(obj, AsyncEmbeddingsClient):
        assert len(await asyncio.to_thread(sync, "sent with the original's key")) == 768
        sent += 1
    if isinstance(obj, AsyncEmbeddingsClient):
        assert len(await obj.embed_query("and from the async client")) == 768
        await obj.aclose()
        sent += 1
    for name in ("aget_query_embedding", "aembed_query"):
        if hasattr(obj, name):
            assert len(await getattr(obj, name)("and from the async client")) == 768
            await obj.aclose()
            sent += 1
    return sent


@pytest.mark.parametrize("env_key", [OTHER_ACCOUNT, None], ids=["env-other-key", "env-unset"])
@pytest.mark.parametrize(
    ("make", "how"),
    [
        (make, how)
        for make in (_client, _async_client, _langchain, _llama_index)
        for how in COPIES
        if how != "model_copy" or make in (_langchain, _llama_index)  # pydantic models only
    ],
    ids=lambda x: x if isinstance(x, str) else x.__name__,
)
def test_a_copy_sends_the_original_key(
    local_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Any], Any],
    how: str,
    env_key: str | None,
) -> None:
    if env_key is not None:
        monkeypatch.setenv("AIMLAPI_API_KEY", env_key)
    obj = make(local_server)
    if hasattr(obj, "client"):
        assert obj.client is not None  # an adapter's clients are built before it is copied
    clone = COPIES[how](obj)
    try:
        assert clone is not obj
        sent = asyncio.run(_both_ways(clone))
    finally:
        for held in (clone, obj):
            if hasattr(held, "close"):
                held.close()
    assert local_server.stats.requests == sent


def _load_elsewhere(blob: bytes, env_key: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "AIMLAPI_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if env_key is not None:
        env["AIMLAPI_API_KEY"] = env_key
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], input=blob, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.mark.parametrize("make", [_client, _langchain, _llama_index], ids=lambda f: f.__name__)
def test_a_pickle_loaded_elsewhere_finds_its_key_or_says_why(
    local_server: Any, make: Callable[[Any], Any]
) -> None:
    obj = make(local_server)
    blob = pickle.dumps(obj)
    obj.close()
    assert local_server.api_key.encode() not in blob
    assert _load_elsewhere(blob, local_server.api_key) == "768"
    for env_key in (OTHER_ACCOUNT, None):
        said = _load_elsewhere(blob, env_key)
        assert said.startswith("MissingAPIKeyError"), said
        assert "AIMLAPI_API_KEY" in said and "same key" in said, said
        assert local_server.api_key not in said
    assert local_server.stats.requests == 1  # the refused copies sent nothing
