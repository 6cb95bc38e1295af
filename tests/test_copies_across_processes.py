"""A pickle loaded in another process finds its key there, or says why; it never uses another.

The key never travels in a pickle (its fingerprint does). In a fresh process (as a spawned
worker of LlamaIndex's ``IngestionPipeline(num_workers=...)`` is) the copy finds the key in
``AIMLAPI_API_KEY`` when it holds the same key; with another key there, or none, the copy
loads but its first call raises ``MissingAPIKeyError`` saying why, and nothing is sent.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from aiml_bge_integrations import EmbeddingsClient

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
