"""Input checks, the long-text policy, batch planning and BGE token counts, pure."""

from __future__ import annotations

import warnings

import pytest

from aiml_bge_integrations._batching import (
    LongTextWarning,
    apply_long_text_policy,
    check_texts,
    collect_texts,
    iter_checked_chunks,
)
from aiml_bge_integrations.errors import InputTypeError, InvalidInputError, TextTooLongError
from aiml_bge_integrations.tokens import (
    count_tokens,
    count_tokens_batch,
    surely_fits,
    truncate_texts,
)

BGE = "BAAI/bge-base-en-v1.5"
LONG = "The quick brown fox jumps over the lazy dog. " * 80  # about 800 tokens
KOREAN = "한국 " * 170  # 510 characters, over 1,000 tokens (Hangul decomposes into jamo)


# -- tokens ---------------------------------------------------------------------------------


def test_laura_is_a_dj_is_seven_tokens() -> None:
    assert count_tokens("Laura is a DJ.") == 7
    assert count_tokens_batch(["Laura is a DJ.", "hello"]) == [7, 3]
    assert count_tokens_batch([]) == []


# -- input checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("texts", [None, 42, 3.5, object()])
def test_not_iterable_is_a_type_error(texts: object) -> None:
    with pytest.raises(TypeError) as info:
        collect_texts(texts)
    assert isinstance(info.value, InputTypeError)


@pytest.mark.parametrize("texts", ["one string", b"bytes", bytearray(b"x")])
def test_a_single_string_is_refused_not_split_into_characters(texts: object) -> None:
    with pytest.raises(InputTypeError, match="iterable of str"):
        collect_texts(texts)


@pytest.mark.parametrize(
    ("bad", "name"), [(None, "NoneType"), (3, "int"), (b"x", "bytes"), (["a"], "list")]
)
def test_non_str_item_names_its_index(bad: object, name: str) -> None:
    with pytest.raises(TypeError) as info:
        collect_texts(["ok", "fine", bad, "ok"])
    assert isinstance(info.value, InputTypeError)
    assert info.value.index == 2
    assert "index 2" in str(info.value) and name in str(info.value)


def test_every_empty_or_whitespace_index_is_named() -> None:
    texts = ["a", "", "b", "   ", "\t\n", "c", "\u3000"]
    with pytest.raises(ValueError) as info:
        collect_texts(texts)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.indices == [1, 3, 4, 6]
    assert "1, 3, 4, 6" in str(info.value)


def test_many_blank_indices_are_all_recorded_even_when_the_message_is_short() -> None:
    texts = [""] * 100
    with pytest.raises(InvalidInputError) as info:
        collect_texts(texts)
    assert info.value.indices == list(range(100))
    assert "and 80 more" in str(info.value)


def test_lone_surrogate_is_a_value_error_naming_the_index() -> None:
    with pytest.raises(ValueError) as info:
        collect_texts(["fine", "ok \udc80 broken", "ünïcode is fine"])
    assert isinstance(info.value, InvalidInputError)
    assert info.value.indices == [1]
    assert "index 1" in str(info.value)


def test_generator_is_read_once_and_kept_in_order() -> None:
    reads: list[int] = []

    def gen():  # type: ignore[no-untyped-def]
        for i in range(5):
            reads.append(i)
            yield f"text {i}"

    assert collect_texts(gen()) == [f"text {i}" for i in range(5)]
    assert reads == [0, 1, 2, 3, 4]


def test_offsets_name_the_callers_index() -> None:
    with pytest.raises(InvalidInputError) as info:
        check_texts(["x", " "], offset=40)
    assert info.value.indices == [41]


def test_streaming_chunks_check_each_chunk_with_its_offset() -> None:
    chunks = iter_checked_chunks((f"t{i}" for i in range(7)), 3)
    assert next(chunks) == (0, ["t0", "t1", "t2"])
    assert list(chunks) == [(3, ["t3", "t4", "t5"]), (6, ["t6"])]
    bad = iter_checked_chunks(["a", "b", "c", "d", ""], 2)
    assert next(bad) == (0, ["a", "b"])
    assert next(bad) == (2, ["c", "d"])
    with pytest.raises(InvalidInputError) as info:
        next(bad)
    assert info.value.indices == [4]


# -- long texts -----------------------------------------------------------------------------


def test_truncate_warns_with_the_count_and_keeps_a_prefix_within_512_tokens() -> None:
    texts = ["short", LONG, "also short", LONG + " tail"]
    with pytest.warns(LongTextWarning, match=r"^2 text\(s\)") as record:
        out = apply_long_text_policy(texts, BGE, "truncate")
    assert "index 1, 3" in str(record[0].message)
    assert out[0] == "short" and out[2] == "also short"
    for i in (1, 3):
        assert texts[i].startswith(out[i])
        assert len(out[i]) < len(texts[i])
        assert 500 <= count_tokens(out[i]) <= 512


def test_truncate_handles_texts_with_more_tokens_than_characters() -> None:
    assert count_tokens(KOREAN) > 512 >= len(KOREAN)
    with pytest.warns(LongTextWarning, match=r"^1 text\(s\)"):
        out = apply_long_text_policy(["ok", KOREAN], BGE, "truncate")
    assert KOREAN.startswith(out[1])
    assert count_tokens(out[1]) <= 512


def test_error_policy_names_every_index_and_its_token_count() -> None:
    texts = ["short", LONG, "fine", KOREAN]
    with pytest.raises(TextTooLongError) as info:
        apply_long_text_policy(texts, BGE, "error", offset=100)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.indices == [101, 103]
    assert err.token_counts == {101: count_tokens(LONG), 103: count_tokens(KOREAN)}
    assert f"101 ({count_tokens(LONG)} tokens)" in str(err)


def test_none_policy_and_non_bge_models_are_untouched() -> None:
    texts = ["short", LONG]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_long_text_policy(texts, BGE, "none") == texts
        assert apply_long_text_policy(texts, "text-embedding-3-small", "truncate") == texts
        assert apply_long_text_policy(texts, "text-embedding-3-small", "error") == texts


def test_short_texts_pass_without_warning() -> None:
    texts = ["a" * 510, "word " * 100]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_long_text_policy(texts, BGE, "truncate") == texts


def test_exactly_512_tokens_is_kept_whole() -> None:
    text = " ".join(["word"] * 510)
    assert count_tokens(text) == 512
    result = truncate_texts([text])
    assert result.texts == [text] and result.over_limit == {}
    longer = text + " word"
    cut = truncate_texts([longer])
    assert cut.over_limit == {0: 513}
    assert cut.texts == [text]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        apply_long_text_policy(["x"], BGE, "drop")


def test_surely_fits_never_passes_an_ascii_text_that_is_over() -> None:
    # The shortcut that skips tokenizing: ASCII text with at most 510 characters other than
    # spaces. Worst cases for it: every character its own token (punctuation, single letters
    # between spaces, unknown runs), tabs and newlines, and texts just over the bound.
    import random

    rng = random.Random(5)
    alphabet = "ab.,;:!?'\"()-_/\\\t\n" + "xyz" * 3
    texts = ["." * 510, ". " * 510, "a " * 510, "a\t" * 255, "!" * 511, "a" * 511]
    for _ in range(400):
        n = rng.randint(400, 700)
        texts.append("".join(rng.choice(alphabet + " " * 4) for _ in range(n)))
    counts = count_tokens_batch(texts)
    fits = [surely_fits(t) for t in texts]
    assert any(fits) and not all(fits)
    for text, n, ok in zip(texts, counts, fits, strict=True):
        if ok:
            assert n <= 512, (text[:40], n)
    assert surely_fits("word " * 127 + "wo")  # 510 characters other than spaces
    assert not surely_fits("word " * 127 + "wor")  # 511: tokenize to know
    assert not surely_fits("한국")  # other scripts are always tokenized
