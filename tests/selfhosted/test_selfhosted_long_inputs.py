"""Inputs over BGE's 512-token window, per dialect, under each of the client's ``long_text`` policies.

Each server runs with the real model's window (``max_tokens_per_item=512``) and answers an
over-long input the way its real counterpart does: TEI 413, vLLM and OpenAI 400, the AI/ML
stand-in 400 naming the input, infinity and Ollama cut it silently.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from selfhosted_support import DIALECTS

from aiml_bge_integrations._batching import LongTextWarning
from aiml_bge_integrations.errors import ItemRejectedError, TextTooLongError
from aiml_bge_integrations.server import HashingEmbedder
from aiml_bge_integrations.tokens import count_tokens, truncate_texts

EMBEDDER = HashingEmbedder()
LONG = " ".join(f"word{i % 50}" for i in range(700))
TEXTS = ["a short passage first", LONG, "another short passage last"]
WINDOW = 512


def as32(vectors: Any) -> np.ndarray[Any, Any]:
    return np.asarray(vectors, dtype=np.float32)


def test_the_long_text_is_really_over_the_window() -> None:
    assert count_tokens(LONG) > WINDOW
    assert all(count_tokens(t) < 20 for t in (TEXTS[0], TEXTS[2]))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_truncate_policy_cuts_before_sending_so_no_server_refuses(
    dialect: str, serve: Any, sync_client: Any
) -> None:
    server = serve(dialect, max_tokens_per_item=WINDOW)
    client = sync_client(server)  # long_text="truncate" is the default

    with pytest.warns(LongTextWarning, match="1 text"):
        vectors = client.embed_documents(TEXTS)

    cut = truncate_texts(TEXTS).texts
    assert count_tokens(cut[1]) <= WINDOW
    np.testing.assert_array_equal(as32(vectors), EMBEDDER.embed(cut).astype(np.float32))
    assert server.stats["by_status"] == {"200": 1}
    assert server.stats["tokens"] <= 3 * WINDOW


@pytest.mark.parametrize("dialect", DIALECTS)
def test_error_policy_refuses_before_anything_is_sent(
    dialect: str, serve: Any, sync_client: Any
) -> None:
    server = serve(dialect, max_tokens_per_item=WINDOW)
    client = sync_client(server, long_text="error")

    with pytest.raises(TextTooLongError) as caught:
        client.embed_documents(TEXTS)

    assert caught.value.indices == [1]
    assert caught.value.token_counts == {1: count_tokens(LONG)}
    assert server.stats["requests"] == 0


REFUSALS: dict[str, tuple[int, str]] = {
    "aiml": (400, f"input[1] has {count_tokens(LONG)} tokens; at most 512 are allowed"),
    "openai": (400, "This model's maximum context length is 512 tokens"),
    "tei": (413, "Input validation error: `inputs` must have less than 512 tokens"),
    "vllm": (400, "This model's maximum context length is 512 tokens. However, you requested"),
    "vllm-legacy": (400, "This model's maximum context length is 512 tokens"),
}


@pytest.mark.parametrize("dialect", sorted(REFUSALS))
def test_none_policy_lets_the_server_refuse_and_names_the_input(
    dialect: str, serve: Any, sync_client: Any
) -> None:
    server = serve(dialect, max_tokens_per_item=WINDOW)
    # What a refusal teaches the client, alone: TEI's published batch limit is not read.
    client = sync_client(server, long_text="none", discover_limits=False)
    batch_size = client.effective_batch_size

    with warnings.catch_warnings():
        warnings.simplefilter("error", LongTextWarning)
        with pytest.raises(ItemRejectedError) as caught:
            client.embed_documents(TEXTS)

    err = caught.value
    status, message = REFUSALS[dialect]
    assert err.index == 1  # the caller's index, whatever the bisection did
    assert err.status_code == status
    assert message in err.message
    # "less than 512 tokens" is about one input, not the batch: no batch limit is learned.
    assert client.effective_batch_size == batch_size
    refused = server.stats["by_status"].get(str(status), 0)
    assert refused >= 1
    assert set(server.stats["by_status"]) <= {"200", str(status)}


@pytest.mark.parametrize("dialect", ["infinity", "ollama"])
def test_none_policy_with_servers_that_truncate(dialect: str, serve: Any, sync_client: Any) -> None:
    server = serve(dialect, max_tokens_per_item=WINDOW)
    client = sync_client(server, long_text="none")

    vectors = client.embed_documents(TEXTS)

    assert len(vectors) == 3
    assert server.stats["by_status"] == {"200": 1}
    # Billed as cut: the long input counts 512 tokens, not 700+.
    expected = WINDOW + count_tokens(TEXTS[0]) + count_tokens(TEXTS[2])
    assert client.usage.prompt_tokens == expected


@pytest.mark.parametrize("dialect", ["tei", "vllm"])
async def test_async_none_policy_names_the_input_too(
    dialect: str, serve: Any, async_client: Any
) -> None:
    server = serve(dialect, max_tokens_per_item=WINDOW)
    client = async_client(server, long_text="none")
    texts = [f"short text {i}" for i in range(9)] + [LONG] + [f"tail {i}" for i in range(5)]

    with pytest.raises(ItemRejectedError) as caught:
        await client.embed_documents(texts)

    assert caught.value.index == 9
