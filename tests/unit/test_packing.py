"""Batches by count and tokens, pure: every text once, in order, each batch within both limits."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from aiml_bge_integrations._batching import (
    check_texts,
    estimate_tokens,
    pack_batches,
    token_counts,
)
from aiml_bge_integrations._discovery import ServerLimits
from aiml_bge_integrations._engine import Engine
from aiml_bge_integrations._outcome import Context
from aiml_bge_integrations._retry import RetryPolicy
from aiml_bge_integrations._secrets import SecretKey
from aiml_bge_integrations._usage import UsageCounter
from aiml_bge_integrations.tokens import count_tokens, count_tokens_batch


def _check(
    counts: list[int], batches: list[tuple[int, int]], max_count: int, budget: int | None
) -> None:
    # Contiguous, in order, covering everything: nothing dropped, nothing reordered.
    if not counts:
        assert batches == []
        return
    assert [b[0] for b in batches] == [0] + [b[1] for b in batches[:-1]]
    assert batches[-1][1] == len(counts)
    for start, stop in batches:
        assert 1 <= stop - start <= max_count
        if budget is not None and stop - start > 1:
            assert sum(counts[start:stop]) <= budget
    # Greedy: no batch could have taken the next text too.
    for start, stop in batches[:-1]:
        took_all = stop - start == max_count
        over = budget is not None and sum(counts[start : stop + 1]) > budget
        assert took_all or over


def test_batches_hold_at_most_the_count_and_the_budget() -> None:
    counts = [100, 200, 300, 50, 50, 50, 400, 10]
    assert pack_batches(counts, 3, 500) == [(0, 2), (2, 5), (5, 8)]
    assert pack_batches(counts, 8, 500) == [(0, 2), (2, 6), (6, 8)]
    assert pack_batches(counts, 3) == [(0, 3), (3, 6), (6, 8)]
    assert pack_batches(counts, 100, 10_000) == [(0, 8)]


def test_a_text_over_the_budget_gets_a_batch_of_its_own() -> None:
    assert pack_batches([10, 900, 10, 10], 8, 100) == [(0, 1), (1, 2), (2, 4)]
    assert pack_batches([900], 8, 100) == [(0, 1)]
    assert pack_batches([], 8, 100) == []


@pytest.mark.parametrize("seed", range(5))
def test_random_inputs_are_covered_in_order_within_the_limits(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        counts = [rng.choice([1, 3, 7, 50, 512, 2000]) for _ in range(rng.randint(0, 60))]
        max_count = rng.randint(1, 20)
        budget = rng.choice([None, 1, 100, 1000, 16384])
        _check(counts, pack_batches(counts, max_count, budget), max_count, budget)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        pack_batches([1], 0)
    with pytest.raises(ValueError):
        pack_batches([1], 1, 0)


def test_counts_are_exact_where_the_tokenizer_is_shipped() -> None:
    texts = ["Laura is a DJ.", "hello", "word " * 100]
    counts, exact = token_counts(texts, "BAAI/bge-base-en-v1.5", 16384)
    assert exact and counts == count_tokens_batch(texts) == [7, 3, 102]
    counts, exact = token_counts(texts, "sentence-transformers/all-MiniLM-L6-v2", 16384)
    assert exact and counts == [7, 3, 102]


def test_a_huge_text_is_counted_only_past_the_cap() -> None:
    huge = "The quick brown fox jumps over the lazy dog. " * 200_000  # 9 MB
    (n,), exact = token_counts([huge], "BAAI/bge-base-en-v1.5", 512)
    assert exact and 512 < n < count_tokens(huge[:100_000])
    (n,), exact = token_counts([huge], "my-own-model", 512)
    assert not exact and n == 513


def test_the_estimate_errs_high_for_ordinary_text() -> None:
    samples = [
        "The quick brown fox jumps over the lazy dog, and then it naps in the warm sun.",
        "敏捷的棕色狐狸跳过了懒狗，然后在温暖的阳光下打盹。",
    ]
    for text in samples:
        # WordPiece's count (bert-base-uncased), the one the package can check here. (Text in
        # a language a vocabulary was not built for takes more: French under this English
        # one runs at 2.6 bytes per token.)
        assert estimate_tokens(text) >= count_tokens(text), text
    counts, exact = token_counts(samples, "Qwen/Qwen3-Embedding-0.6B", 32768)
    assert not exact and counts == [estimate_tokens(t) for t in samples]


def test_checking_and_estimating_a_huge_text_copies_none_of_it() -> None:
    # A 20 MB string of CJK: encoding it to UTF-8 to look for lone surrogates (as the check
    # did) or to count its bytes would copy 30 MB.
    text = "中" * 10_000_000
    tracemalloc.start()
    try:
        assert check_texts([text]) == [text]
        (n,), exact = token_counts([text], "Qwen/Qwen3-Embedding-0.6B", 32768)
        estimate = estimate_tokens(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"peak {peak:,} bytes"
    assert n == 32769 and not exact
    assert estimate == 10_000_002  # 30,000,000 bytes / 3, plus 2


# -- the engine plans with what a server published ---------------------------------------------


def _engine(model: str, batch_size: int = 128) -> Engine:
    ctx = Context(model, "http://127.0.0.1:9/v1", SecretKey("sk-packing-unit"))
    return Engine(
        ctx,
        batch_size=batch_size,
        long_text="none",
        encoding_format=None,
        query_instruction=None,
        timeout=5.0,
        max_response_bytes=None,
        policy=RetryPolicy(),
        rate_limiter=None,
        usage=UsageCounter(),
    )


def _sizes(batches: Iterator[tuple[int, list[str]]]) -> list[tuple[int, int]]:
    return [(offset, len(texts)) for offset, texts in batches]


def test_a_published_batch_limit_lowers_the_batch_size() -> None:
    engine = _engine("BAAI/bge-small-en-v1.5", batch_size=8)
    engine.learn_server_limits(ServerLimits(max_batch_size=3))
    assert engine.batch_size() == 3
    assert _sizes(engine.batches([f"t{i}" for i in range(7)])) == [(0, 3), (3, 3), (6, 1)]
    engine.learn_server_limits(ServerLimits(max_batch_size=50))  # above the setting: no change
    assert engine.batch_size() == 8


@pytest.mark.parametrize("streamed", [False, True])
def test_a_published_token_budget_packs_by_exact_counts(streamed: bool) -> None:
    engine = _engine("BAAI/bge-small-en-v1.5")
    engine.learn_server_limits(ServerLimits(max_batch_tokens=16))
    texts = ["one two three", "four five six seven eight nine ten eleven", "a", "b c"]
    assert count_tokens_batch(texts) == [5, 10, 3, 4]
    batches = engine.stream_batches(iter(texts)) if streamed else engine.batches(texts)
    assert _sizes(batches) == [(0, 2), (2, 2)]  # 15 tokens (18 with the third), then 7


def test_a_text_counts_no_more_than_the_servers_window_for_an_unknown_model() -> None:
    engine = _engine("acme/house-embedder")
    engine.learn_server_limits(ServerLimits(max_batch_tokens=250, max_input_tokens=100))
    assert engine.input_window() == 100
    long = "x" * 3000  # estimated at 1,002 tokens; the server reads at most 100 of them
    assert _sizes(engine.batches([long] * 5)) == [(0, 2), (2, 2), (4, 1)]


def test_chunks_are_packed_each_on_its_own() -> None:
    engine = _engine("BAAI/bge-small-en-v1.5")
    engine.learn_server_limits(ServerLimits(max_batch_tokens=1000))
    texts = [f"t{i}" for i in range(5)]
    assert _sizes(engine.chunk_batches(texts, 2)) == [(0, 2), (2, 2), (4, 1)]


def test_texts_are_counted_one_batch_ahead_of_what_is_sent() -> None:
    # The first request goes out before the rest of a large call is counted: here, counting
    # anything past the first batch would raise.
    engine = _engine("acme/house-embedder", batch_size=4)
    engine.learn_server_limits(ServerLimits(max_batch_tokens=1000))
    texts: list[Any] = ["a"] * 4 + [None] * 1000
    assert next(engine.batches(texts)) == (0, ["a"] * 4)
