"""HashingEmbedder and the server's caches: deterministic, unit-length, lexical similarity, exact when cached."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys

import numpy as np
import pytest

from aiml_bge_integrations.server.backend import HashingEmbedder, TokenCounter, VectorCache
from aiml_bge_integrations.tokens import count_tokens_batch

TEXTS = ["Laura is a DJ.", "DJs play music at parties", "the cat sat on the mat", "", "  ", "?!"]


def _digest(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype="<f8").tobytes()).hexdigest()


def test_vectors_are_unit_length_and_768_wide() -> None:
    vectors = HashingEmbedder().embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 768)
    assert vectors.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)


def test_dim_is_configurable() -> None:
    vectors = HashingEmbedder(dim=64).embed(["a b c"])
    assert vectors.shape == (1, 64)
    with pytest.raises(ValueError):
        HashingEmbedder(dim=2)


def test_same_text_same_vector_and_embed_one_matches_embed() -> None:
    emb = HashingEmbedder()
    batch = emb.embed(TEXTS)
    again = HashingEmbedder().embed(list(reversed(TEXTS)))[::-1]
    np.testing.assert_array_equal(batch, again)
    one = emb.embed_one("Laura is a DJ.")
    assert isinstance(one, list) and len(one) == 768
    np.testing.assert_array_equal(np.array(one), batch[0])


def test_texts_without_features_share_one_fixed_unit_vector() -> None:
    emb = HashingEmbedder()
    vectors = emb.embed(["", "   ", "?!", "..."])
    for row in vectors[1:]:
        np.testing.assert_array_equal(row, vectors[0])
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0)


def test_identical_across_processes() -> None:
    """Run the embedder in a fresh interpreter (another hash seed) and compare bytes."""
    code = (
        "import hashlib, numpy as np\n"
        "from aiml_bge_integrations.server.backend import HashingEmbedder\n"
        f"v = HashingEmbedder().embed({TEXTS!r})\n"
        "print(hashlib.sha256(np.ascontiguousarray(v, dtype='<f8').tobytes()).hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        timeout=60,
    )
    assert out.stdout.strip() == _digest(HashingEmbedder().embed(TEXTS))


def test_shared_words_are_closer_than_no_shared_words() -> None:
    emb = HashingEmbedder()
    anchor, related, unrelated = emb.embed(
        [
            "the quick brown fox jumps over the lazy dog",
            "a quick brown fox is fast",
            "stock markets fell sharply on monday",
        ]
    )
    assert anchor @ related > 0.3
    assert abs(anchor @ unrelated) < 0.15
    assert anchor @ related > anchor @ unrelated + 0.2


def test_plural_and_case_do_not_matter_much() -> None:
    emb = HashingEmbedder()
    cats, cat, dogs = emb.embed(["Cats", "cat", "dogs"])
    assert cats @ cat > 0.99
    assert cats @ dogs < 0.5


_ODD_CHARS = list(
    "abc XYZ.,;:!?'\"-()[]{}\t\n\r\x00\x01\x1c\x1f\x85\xa0\u2003\u3000éàçñÅ\u0301\u0300 "
    "中文日本語한국어😀🎉\u200b\u200d\ufeff#$%&*+/<=>@\\^_`|~0123456789"
)


def test_token_counter_matches_the_tokenizer_exactly() -> None:
    rng = random.Random(11)
    texts = ["Laura is a DJ.", "", " ", "  two  spaces  ", "x" * 150 + " long words become [UNK]"]
    for _ in range(3000):
        texts.append("".join(rng.choice(_ODD_CHARS) for _ in range(rng.randint(0, 40))))
    counter = TokenCounter()
    assert counter.count(texts) == count_tokens_batch(texts)
    assert counter.count(texts) == count_tokens_batch(texts)  # from the cache this time
    assert counter.count(["Laura is a DJ."]) == [7]


def test_vector_cache_gives_the_embedders_float32_rows_and_stays_bounded() -> None:
    embedder = HashingEmbedder()
    cache = VectorCache(embedder, max_rows=3)
    texts = ["alpha beta", "gamma", "alpha beta", "delta", "epsilon", "zeta", "x" * 5000]
    expected = embedder.embed(texts).astype("<f4")
    first = cache.embed(texts)
    assert first.dtype == np.dtype("<f4") and first.shape == (len(texts), 768)
    np.testing.assert_array_equal(first, expected)
    assert len(cache._rows) == 3  # the oldest went first; the 5,000-character text never stays
    assert "x" * 5000 not in cache._rows
    np.testing.assert_array_equal(cache.embed(list(reversed(texts))), expected[::-1])
    # A cached row is a copy: changing what a caller got back changes nothing kept.
    again = cache.embed(["zeta"])
    again[0, :] = 0.0
    np.testing.assert_array_equal(cache.embed(["zeta"])[0], expected[5])
    assert cache.embed([]).shape == (0, 768)
    assert VectorCache(embedder, max_rows=0).embed(["gamma"]).shape == (1, 768)


def test_token_counter_caches_whole_texts_only_when_short() -> None:
    counter = TokenCounter()
    long_text = "word " * 2000
    assert counter.count(["Laura is a DJ.", long_text]) == count_tokens_batch(
        ["Laura is a DJ.", long_text]
    )
    assert "Laura is a DJ." in counter._texts and long_text not in counter._texts
    assert counter.count(["Laura is a DJ."]) == [7]
