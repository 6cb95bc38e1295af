"""Bounded token scans, pure: the verdict and the cut are exact, the work is bounded by the window."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import pytest

import aiml_bge_integrations.tokens as tokens_module
from aiml_bge_integrations._batching import LongTextWarning, apply_long_text_policy
from aiml_bge_integrations._models import token_limit
from aiml_bge_integrations.errors import TextTooLongError
from aiml_bge_integrations.tokens import (
    count_tokens,
    count_tokens_upto,
    get_tokenizer,
    scan_tokens,
    truncate_texts,
)

PROSE = "The quick brown fox jumps over the lazy dog. "
PIECES = [
    "word", "the", "unbelievably", "a" * 150, "x" * 40, ".", ",", "!", "한국", "中文", "éé",
    "\x00", "\x0b", "\u200b", " ", "  ", "\t", "\n", "\u3000", "\xa0", "naïve", "—", "😀",
    "ab\u0301c",
]  # fmt: skip
"""Words, words over WordPiece's 100 characters, punctuation, CJK, Hangul, accents, emoji,
characters the normaliser drops, and every kind of whitespace BERT knows."""


def _whole(text: str, max_tokens: int) -> tuple[int, int | None]:
    """The count and the cut that tokenizing the whole text gives (what the old code did)."""
    enc = get_tokenizer().encode(text)
    n = len(enc.ids)
    if n <= max_tokens:
        return n, None
    k = max_tokens - 2
    while k > 1 and enc.tokens[k + 1].startswith("##"):
        k -= 1
    return n, enc.offsets[k][1]


@pytest.mark.parametrize(("first", "largest"), [(1, 4), (8, 32), (4096, 1 << 18)])
def test_the_scan_gives_the_verdict_and_cut_of_the_whole_text(
    monkeypatch: pytest.MonkeyPatch, first: int, largest: int
) -> None:
    # Tiny windows make every text span many of them, so every way a window can end (inside
    # a word, at whitespace, inside a word over 100 characters, among dropped characters) is met.
    monkeypatch.setattr(tokens_module, "_FIRST_WINDOW", first)
    monkeypatch.setattr(tokens_module, "_MAX_WINDOW", largest)
    rng = random.Random(first)
    for _ in range(300):
        max_tokens = rng.choice([3, 5, 10, 20, 40])
        text = "".join(
            rng.choice(PIECES) + rng.choice(["", " "]) for _ in range(rng.randint(0, 100))
        )
        n, cut = _whole(text, max_tokens)
        scan = scan_tokens(text, max_tokens)
        assert scan.cut == cut, (max_tokens, text)
        assert scan.over is (cut is not None)
        if scan.exact or cut is None:
            assert scan.tokens == n, (max_tokens, text)
        else:
            assert max_tokens < scan.tokens <= n


def test_a_text_that_fits_gets_its_exact_count_however_long_it_is() -> None:
    spaced = "word" + " " * 300_000 + "end"
    assert scan_tokens(spaced) == tokens_module.TokenScan(4, True, None)
    # A word over WordPiece's 100 characters is one [UNK], however long it goes on.
    blob = "a" * 1_000_000
    assert scan_tokens(blob) == tokens_module.TokenScan(3, True, None)
    assert scan_tokens(blob + "!") == tokens_module.TokenScan(4, True, None)


def test_words_over_the_wordpiece_limit_are_counted_and_cut_as_whole_words() -> None:
    word = "b" * 300
    text = " ".join([word] * 600)
    scan = scan_tokens(text)
    assert scan.over and scan.tokens > 512
    assert text[: scan.cut] == " ".join([word] * 510)
    assert count_tokens(text[: scan.cut]) == 512


def test_a_huge_text_costs_a_bounded_amount_of_memory_to_cut_or_refuse() -> None:
    # 20 MB of prose: the old code tokenized all of it (about 40 times its size in Python
    # objects, 150 times in all); now one window of a few thousand characters is read.
    text = PROSE * (20_000_000 // len(PROSE))
    get_tokenizer()  # loaded before measuring
    tracemalloc.start()
    try:
        with pytest.warns(LongTextWarning):
            (cut,) = apply_long_text_policy([text], "BAAI/bge-base-en-v1.5", "truncate")
        with pytest.raises(TextTooLongError, match=r"index 0 \(at least \d+ tokens\)"):
            apply_long_text_policy([text], "BAAI/bge-base-en-v1.5", "error")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(text), f"peak {peak:,} bytes for a text of {len(text):,}"
    assert text.startswith(cut) and 500 <= count_tokens(cut) <= 512
    assert cut == text[: _whole(text[:10_000], 512)[1]]


def test_a_100_mb_text_stays_under_200_mb_above_the_baseline() -> None:
    # The tokenizer's own (Rust) memory is not seen by tracemalloc: measure the process.
    script = textwrap.dedent(
        """
        import resource, warnings
        from aiml_bge_integrations._batching import apply_long_text_policy
        from aiml_bge_integrations.tokens import get_tokenizer
        get_tokenizer()
        text = "The quick brown fox jumps over the lazy dog. " * 2_222_223
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            apply_long_text_policy([text], "BAAI/bge-base-en-v1.5", "truncate")
            apply_long_text_policy(["a" * 100_000_000], "BAAI/bge-base-en-v1.5", "truncate")
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    grown_mb = int(done.stdout.strip())
    assert grown_mb < 200, f"grew {grown_mb} MB"


def test_count_tokens_upto_is_exact_within_the_window_and_above_it_past_it() -> None:
    texts = ["Laura is a DJ.", PROSE * 10, PROSE * 1000, "한국 " * 200]
    counts = count_tokens_upto(texts, 512)
    assert counts[:2] == [count_tokens(texts[0]), count_tokens(texts[1])]
    assert counts[1] <= 512 < counts[2] <= count_tokens(texts[2])
    assert counts[3] == count_tokens(texts[3])  # within one window: exact


def test_truncate_texts_says_which_counts_are_lower_bounds() -> None:
    long_one = PROSE * 1000  # 45,000 characters: read as far as the verdict needs
    short_one = PROSE * 700  # 31,500: tokenized whole
    result = truncate_texts(["ok", short_one, long_one])
    assert sorted(result.over_limit) == [1, 2]
    assert result.over_limit[1] == count_tokens(short_one)
    assert result.partial == frozenset({2}) and 512 < result.over_limit[2] < count_tokens(long_one)
    assert result.texts[2] == result.texts[1]  # the same prose, cut at the same word


def test_the_policy_applies_where_the_window_is_known(recwarn: pytest.WarningsRecorder) -> None:
    text = "word " * 600  # 602 tokens
    (cut,) = apply_long_text_policy([text], "BAAI/bge-small-en-v1.5", "truncate")
    assert count_tokens(cut) == 512 and text.startswith(cut)
    assert "over 512 tokens" in str(recwarn.pop(LongTextWarning).message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # No window the package can count exactly: the text goes as it is.
        assert apply_long_text_policy([text], "intfloat/multilingual-e5-small", "error") == [text]
        assert apply_long_text_policy([text], "my-own-model", "error") == [text]


def test_any_window_cuts_at_its_own_limit() -> None:
    text = "word " * 300  # 302 tokens: over MiniLM's 256
    assert token_limit("sentence-transformers/all-MiniLM-L6-v2") == 256
    result = truncate_texts([text], 256)
    assert result.over_limit == {0: 302}
    assert count_tokens(result.texts[0]) == 256 and text.startswith(result.texts[0])
