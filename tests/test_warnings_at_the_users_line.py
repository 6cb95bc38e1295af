"""The package's warnings point at the line of the user's code that made the call.

Python's default filter shows a warning once per line it is attributed to. Attributed to a
line of the package (as ``LongTextWarning`` was, to the adapter's or the client's own line),
every call anywhere showed it once per process. Each test calls from two lines of its own,
twice each, under the default filter: two warnings, one for each of its lines, in this file.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiml_bge_integrations import EmbeddingsClient, LongTextWarning
from aiml_bge_integrations._warnings import warn_user

LONG = "word " * 600
"""Over the 512-token window of a BGE model: truncated, with a LongTextWarning."""


def _line() -> int:
    """The line after the caller's: where the call under test is."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings shown under Python's default filter (once per location)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        yield record


def _where(record: list[warnings.WarningMessage], category: type[Warning]) -> list[Any]:
    return [(w.filename, w.lineno) for w in record if issubclass(w.category, category)]


def _twice_each(*calls: Callable[[], Any]) -> list[int]:
    """Run each call (a lambda on a line of its own) twice; the lines they are written on."""
    for call in calls:
        call()
        call()
    return sorted({call.__code__.co_firstlineno for call in calls})


def test_the_helper_skips_the_package_frames(caught: list[warnings.WarningMessage]) -> None:
    first = _line()
    warn_user("from the package", UserWarning)
    second = _line()
    warn_user("from the package", UserWarning)
    assert _where(caught, UserWarning) == [(__file__, first), (__file__, second)]


def test_the_core_client(local_server: Any, caught: list[warnings.WarningMessage]) -> None:
    with EmbeddingsClient(api_key=local_server.api_key, base_url=local_server.base_url) as client:
        lines = _twice_each(
            lambda: client.embed_documents([LONG]),
            lambda: client.embed_documents([LONG]),
        )
    assert _where(caught, LongTextWarning) == [(__file__, line) for line in lines]


def test_langchain_sync_and_async(local_server: Any, caught: list[warnings.WarningMessage]) -> None:
    langchain = pytest.importorskip("aiml_bge_integrations.langchain")
    import asyncio

    emb = langchain.AimlBgeEmbeddings(api_key=local_server.api_key, base_url=local_server.base_url)
    with emb:
        lines = _twice_each(
            lambda: emb.embed_documents([LONG]),
            lambda: emb.embed_documents([LONG]),
        )
        assert _where(caught, LongTextWarning) == [(__file__, line) for line in lines]
        caught.clear()
        lines = _twice_each(
            lambda: emb.embed_query(LONG),
            lambda: emb.embed_query(LONG),
        )
        assert _where(caught, LongTextWarning) == [(__file__, line) for line in lines]
        caught.clear()

        async def main() -> list[int]:
            lines = []
            for _ in range(2):
                lines.append(_line())
                await emb.aembed_documents([LONG])
                lines.append(_line())
                await emb.aembed_query(LONG)
            return sorted(set(lines))

        lines = asyncio.run(main())
    assert _where(caught, LongTextWarning) == [(__file__, line) for line in lines]


def test_llama_index_sync_paths(local_server: Any, caught: list[warnings.WarningMessage]) -> None:
    llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
    embed = llama_index.AimlBgeEmbedding(
        api_key=local_server.api_key, base_url=local_server.base_url
    )
    with embed:
        for calls in (
            (
                lambda: embed.get_text_embedding_batch([LONG, "short"]),
                lambda: embed.get_text_embedding_batch([LONG, "short"]),
            ),
            (
                lambda: embed.get_text_embedding(LONG),
                lambda: embed.get_text_embedding(LONG),
            ),
            (
                lambda: embed.get_query_embedding(LONG),
                lambda: embed.get_query_embedding(LONG),
            ),
        ):
            caught.clear()
            lines = _twice_each(*calls)
            assert _where(caught, LongTextWarning) == [(__file__, line) for line in lines]


def test_llama_index_async_paths(local_server: Any, caught: list[warnings.WarningMessage]) -> None:
    llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
    import asyncio

    embed = llama_index.AimlBgeEmbedding(
        api_key=local_server.api_key, base_url=local_server.base_url
    )

    async def main() -> list[int]:
        lines = []
        for _ in range(2):
            lines.append(_line())
            await embed.aget_text_embedding(LONG)
            lines.append(_line())
            await embed.aget_query_embedding(LONG)
        return sorted(set(lines))

    lines = asyncio.run(main())
    assert _where(caught, LongTextWarning) == [(__file__, line) for line in lines]
    caught.clear()

    async def batches() -> None:
        for _ in range(2):
            await embed.aget_text_embedding_batch([LONG])
            await embed.aget_text_embedding_batch([LONG])

    # LlamaIndex runs each chunk of its async batch in an asyncio task of its own, whose
    # stack does not hold the caller's line: there every warning is shown, none hidden.
    asyncio.run(batches())
    assert len(_where(caught, LongTextWarning)) == 4
    embed.close()
