"""Bad input is refused before any request: one test per row of the table in issue 5.

Each refusal is checked with the sync and the async client against the local server, and
the server's own counter proves that nothing reached it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from core_helpers import MODES, async_client, server_vectors, sync_client, texts_of

from aiml_bge_integrations import InputTypeError, InvalidInputError


def call(mode: str, server: Any, method: str, arg: Any) -> Any:
    if mode == "sync":
        with sync_client(server) as client:
            result = getattr(client, method)(arg)
            return list(result) if method == "iter_embeddings" else result

    async def run() -> Any:
        async with async_client(server) as client:
            if method == "iter_embeddings":
                return [v async for v in client.iter_embeddings(arg)]
            return await getattr(client, method)(arg)

    return asyncio.run(run())


METHODS = ["embed_documents", "iter_embeddings"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("texts", [None, 42, 3.5, object(), "a single string", b"bytes"])
def test_not_an_iterable_of_texts_is_a_type_error(
    mode: str, method: str, texts: Any, local_server: Any
) -> None:
    with pytest.raises(TypeError) as info:
        call(mode, local_server, method, texts)
    assert isinstance(info.value, InputTypeError)
    assert local_server.stats.requests == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("bad", "name"), [(None, "NoneType"), (7, "int"), (b"bytes", "bytes")])
def test_an_item_that_is_not_str_is_a_type_error_naming_its_index(
    mode: str, bad: Any, name: str, local_server: Any
) -> None:
    texts: list[Any] = texts_of(300)
    texts[257] = bad
    with pytest.raises(TypeError) as info:
        call(mode, local_server, "embed_documents", texts)
    assert isinstance(info.value, InputTypeError)
    assert info.value.index == 257
    assert "index 257" in str(info.value) and name in str(info.value)
    assert local_server.stats.requests == 0  # not even the batches before it


@pytest.mark.parametrize("mode", MODES)
def test_empty_and_whitespace_texts_are_a_value_error_naming_every_index(
    mode: str, local_server: Any
) -> None:
    texts = texts_of(200)
    blanks = [3, 64, 65, 199]
    for i, blank in zip(blanks, ["", " ", "\n\t", "\u2003"], strict=True):
        texts[i] = blank
    with pytest.raises(ValueError) as info:
        call(mode, local_server, "embed_documents", texts)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.indices == blanks
    assert "3, 64, 65, 199" in str(info.value)
    assert local_server.stats.requests == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_a_value_error(mode: str, query: str, local_server: Any) -> None:
    with pytest.raises(ValueError):
        call(mode, local_server, "embed_query", query)
    assert local_server.stats.requests == 0


@pytest.mark.parametrize("mode", MODES)
def test_lone_surrogate_is_a_value_error_naming_the_index(mode: str, local_server: Any) -> None:
    texts = texts_of(10)
    texts[6] = "half a pair \ud83d here"
    with pytest.raises(ValueError) as info:
        call(mode, local_server, "embed_documents", texts)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.indices == [6]
    assert "index 6" in str(info.value)
    assert local_server.stats.requests == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("empty", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_nothing_in_nothing_out_and_no_request(
    mode: str, method: str, empty: Any, local_server: Any
) -> None:
    assert call(mode, local_server, method, empty) == []
    assert local_server.stats.requests == 0


class OneShot:
    """An iterable that counts how often it is iterated and how many items were taken."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.iterations = 0
        self.taken = 0

    def __iter__(self) -> Iterator[str]:
        self.iterations += 1  # counted when iter() is called, as opening a file or cursor would be
        return self._items()

    def _items(self) -> Iterator[str]:
        for t in self.texts:
            self.taken += 1
            yield t


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
def test_a_generator_is_accepted_and_read_once(mode: str, method: str, local_server: Any) -> None:
    texts = texts_of(45)
    source = OneShot(texts)
    assert call(mode, local_server, method, source) == server_vectors(texts)
    assert source.iterations == 1
    assert source.taken == 45
    generator = (t for t in texts)
    assert call(mode, local_server, method, generator) == server_vectors(texts)
    assert next(generator, None) is None
