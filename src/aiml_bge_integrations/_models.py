"""What is known per model family, pure: prompts per side, token limit, tokenizer, dimension.

``PROFILES`` is the one table: one ``Family`` per model family, matched by name. A model
name is matched without its organisation (``BAAI/``, ``intfloat/``, any path), without an
Ollama ``:tag`` and ignoring case; ``_`` counts as ``-``. ``profile_for(model)`` gives the
facts for one model (the family's, with the dimension of that size), or ``None`` for a model
the package does not know: such a model gets no prompt and no token policy.

The facts come from each family's published model card. Where a card is unclear, the
comment beside the entry says so, and a dimension that is not certain is left out (``None``:
any dimension is accepted, as long as it is the same throughout a call), since a wrong
dimension would refuse every correct reply.

To add a family: add one ``Family`` to ``PROFILES`` (before any entry whose pattern also
matches its names), a test in ``tests/unit/test_models.py``, and paste ``profiles_table()``
into docs/models.md (the docs test says when it is out of date).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "BERT_UNCASED",
    "BGE_MAX_TOKENS",
    "BGE_QUERY_INSTRUCTION",
    "BGE_ZH_QUERY_INSTRUCTION",
    "KNOWN_DIMENSIONS",
    "PROFILES",
    "Family",
    "Profile",
    "blank_texts_allowed",
    "default_document_instruction",
    "default_query_instruction",
    "expected_dimension",
    "is_bge_model",
    "missing_key_message",
    "model_mismatch_message",
    "policy_window",
    "profile_for",
    "profiles_table",
    "same_model",
    "token_limit",
    "token_policy_notice",
]

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
"""The retrieval instruction from the BGE English model card; queries only, never passages."""
BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
"""The retrieval instruction from the BGE Chinese model card (full-width colon); queries only."""
BGE_MAX_TOKENS = 512
"""The BGE v1/v1.5 window, ``[CLS]`` and ``[SEP]`` included."""

BERT_UNCASED = "bert-base-uncased"
"""The one tokenizer the package ships: bert-base-uncased's WordPiece vocabulary (``bge_vocab.txt``)."""

_WEB_SEARCH_TASK = "Given a web search query, retrieve relevant passages that answer the query"
"""The retrieval task the instruction-tuned cards (e5-instruct, gte-Qwen2, Qwen3) use in their examples."""


@dataclass(frozen=True)
class Family:
    """One row of ``PROFILES``: what a model family's card says about using it."""

    name: str
    """The family, as the docs table shows it."""
    pattern: str
    """Regular expression that must match the whole bare name (lowercase, no org, no tag)."""
    examples: tuple[str, ...]
    """Full names of models in the family (the docs show them; the tests match each one)."""
    query_prompt: str | None
    """Text put before every query (None: none)."""
    document_prompt: str | None
    """Text put before every document (None: none)."""
    max_tokens: int | None
    """The model's window in tokens, special tokens included (None: not known)."""
    tokenizer: str | None = None
    """The shipped tokenizer that counts this family's tokens exactly (None: none shipped)."""
    dimensions: tuple[tuple[str, int], ...] = ()
    """``(pattern, dimension)`` pairs: the first pattern found in the name gives the dimension."""
    limits: tuple[tuple[str, int], ...] = ()
    """``(pattern, tokens)`` pairs for models whose window is not ``max_tokens``."""
    tokenized: str = ""
    """Pattern of the names ``tokenizer`` applies to (found in the bare name; empty: all)."""
    accepts_blank: bool = False
    """Whether the servers that serve this family embed an empty or blank text."""
    notes: str = ""
    """What a user should know, one sentence (shown in the docs table)."""
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def matches(self, bare: str) -> bool:
        """Whether the bare name ``bare`` (as ``_bare`` gives it) is of this family."""
        return self._regex.fullmatch(bare) is not None

    def dimension_of(self, bare: str, tag: str = "") -> int | None:
        """The dimension of the model ``bare`` (or, failing that, of its ``:tag``), if known."""
        for name in (bare, tag):
            found = _first(self.dimensions, name)
            if found is not None:
                return found
        return None

    def limit_of(self, bare: str) -> int | None:
        """The token window of the model ``bare``."""
        found = _first(self.limits, bare)
        return self.max_tokens if found is None else found

    def tokenizer_of(self, bare: str) -> str | None:
        """The shipped tokenizer for the model ``bare``, if it has one."""
        if self.tokenizer is None or (self.tokenized and not re.search(self.tokenized, bare)):
            return None
        return self.tokenizer


def _first(pairs: tuple[tuple[str, int], ...], name: str) -> int | None:
    if not name:
        return None
    return next((value for pattern, value in pairs if re.search(pattern, name)), None)


@dataclass(frozen=True)
class Profile:
    """The facts for one model name: its family's, with the dimension of its size."""

    family: str
    """The family's name (``Family.name``)."""
    query_prompt: str | None
    """Text put before every query (None: none)."""
    document_prompt: str | None
    """Text put before every document (None: none)."""
    max_tokens: int | None
    """The model's window in tokens, special tokens included (None: not known)."""
    tokenizer: str | None
    """The shipped tokenizer that counts its tokens exactly (None: counts are estimates)."""
    dimension: int | None
    """The vector length it returns (None: not known for this name)."""
    accepts_blank: bool
    """Whether empty or blank texts may be sent."""


_SML = (("small", 384), ("base", 768), ("large", 1024))
"""The BERT sizes most families come in: small (384), base (768), large (1024)."""

# Each entry holds its card's facts. Where patterns overlap the first match wins, so the
# more specific families come first.
PROFILES: tuple[Family, ...] = (
    Family(
        "BGE v1 / v1.5 (English)",
        r"bge-(small|base|large)-en(-v1\.5)?",
        ("BAAI/bge-small-en-v1.5", "BAAI/bge-base-en-v1.5", "BAAI/bge-large-en-v1.5"),
        BGE_QUERY_INSTRUCTION,
        None,
        BGE_MAX_TOKENS,
        BERT_UNCASED,
        _SML,
        accepts_blank=False,  # the AI/ML API, which serves these, refuses blank texts
        notes="Instruction on queries only; the package's default model.",
    ),
    Family(
        "BGE v1 / v1.5 (Chinese)",
        r"bge-(small|base|large)-zh(-v1\.5)?",
        ("BAAI/bge-small-zh-v1.5", "BAAI/bge-base-zh-v1.5", "BAAI/bge-large-zh-v1.5"),
        BGE_ZH_QUERY_INSTRUCTION,
        None,
        512,
        None,  # a Chinese BERT vocabulary, not shipped
        # bge-small-zh is 512 wide, not 384 (the card's C-MTEB table; 24M parameters).
        (("small", 512), ("base", 768), ("large", 1024)),
        accepts_blank=True,
        notes="Instruction on queries only.",
    ),
    Family(
        "BGE-M3",
        r"bge-m3",
        ("BAAI/bge-m3",),
        None,
        None,
        8192,
        None,  # XLM-RoBERTa's SentencePiece vocabulary, not shipped
        (("", 1024),),
        accepts_blank=True,
        notes="No instruction on either side (through this package: dense vectors only).",
    ),
    Family(
        "e5 instruct (multilingual-e5-large-instruct, e5-mistral)",
        r"(multilingual-e5-large|e5-mistral-7b)-instruct",
        ("intfloat/multilingual-e5-large-instruct", "intfloat/e5-mistral-7b-instruct"),
        f"Instruct: {_WEB_SEARCH_TASK}\nQuery: ",
        None,
        512,
        None,  # XLM-RoBERTa's and Mistral's vocabularies, not shipped
        (("mistral", 4096), ("large", 1024)),
        limits=(("mistral", 4096),),  # the e5-mistral card encodes with max_length 4096
        accepts_blank=True,
        notes="A task instruction on queries only (set query_instruction for other tasks).",
    ),
    Family(
        "e5 / multilingual-e5",
        r"(multilingual-)?e5-(small|base|large)(-v2)?",
        ("intfloat/e5-base-v2", "intfloat/multilingual-e5-small", "intfloat/multilingual-e5-large"),
        "query: ",
        "passage: ",
        512,
        BERT_UNCASED,
        _SML,
        tokenized=r"^e5-",  # the English ones; multilingual-e5 uses XLM-RoBERTa's vocabulary
        accepts_blank=True,
        notes="Prefixes on both sides.",
    ),
    Family(
        "nomic-embed-text v1 / v1.5",
        r"nomic-embed-text(-v1(\.5)?)?",
        ("nomic-ai/nomic-embed-text-v1", "nomic-ai/nomic-embed-text-v1.5"),
        "search_query: ",
        "search_document: ",
        8192,
        # nomic-bert's vocabulary is bert-base-uncased's, padded with unused entries to 30,528
        # (from its config and tokenizer files as remembered; the card does not say: uncertain).
        BERT_UNCASED,
        (("", 768),),
        accepts_blank=True,
        notes="Prefixes on both sides; v1.5 vectors can be shortened (Matryoshka) by the server.",
    ),
    Family(
        "gte-Qwen instruct",
        r"gte-qwen(1\.5|2)-(1\.5b|7b)-instruct",
        ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "Alibaba-NLP/gte-Qwen2-7B-instruct"),
        f"Instruct: {_WEB_SEARCH_TASK}\nQuery: ",
        None,
        32000,  # the cards say "32k"; 32,000 is the smaller reading
        None,  # Qwen's byte-level BPE, not shipped
        (("qwen2-1\\.5b", 1536), ("qwen2-7b", 3584), ("qwen1\\.5-7b", 4096)),
        accepts_blank=False,  # decoder models; not recorded, so blank texts stay refused
        notes="A task instruction on queries only.",
    ),
    Family(
        "gte (English v1, v1.5) / gte-multilingual",
        r"gte-(small|base|large)(-en-v1\.5)?|gte-multilingual-base",
        ("thenlper/gte-base", "Alibaba-NLP/gte-large-en-v1.5", "Alibaba-NLP/gte-multilingual-base"),
        None,
        None,
        512,
        # thenlper/gte-* and gte-*-en-v1.5 use bert-base-uncased's vocabulary (for v1.5 padded to
        # 30,528, as remembered: the cards do not say, uncertain); the multilingual one uses
        # XLM-RoBERTa's.
        BERT_UNCASED,
        _SML,
        limits=(("v1\\.5|multilingual", 8192),),
        tokenized=r"^gte-(small|base|large)",
        accepts_blank=True,
        notes="No prompt on either side.",
    ),
    Family(
        "Qwen3-Embedding",
        r"qwen3-embedding(-(0\.6b|4b|8b))?",
        ("Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Embedding-4B", "Qwen/Qwen3-Embedding-8B"),
        # The card's get_detailed_instruct puts no space after "Query:".
        f"Instruct: {_WEB_SEARCH_TASK}\nQuery:",
        None,
        32768,
        None,  # Qwen3's byte-level BPE, not shipped
        (("0\\.6b", 1024), ("4b", 2560), ("8b", 4096)),
        accepts_blank=False,  # decoder models; not recorded, so blank texts stay refused
        notes="A task instruction on queries only; vectors can be shortened (Matryoshka) by the server.",
    ),
    Family(
        "all-MiniLM / all-mpnet (sentence-transformers)",
        r"all-minilm-l(6|12)-v2|all-mpnet-base-v2",
        (
            "sentence-transformers/all-MiniLM-L6-v2",
            "sentence-transformers/all-MiniLM-L12-v2",
            "sentence-transformers/all-mpnet-base-v2",
        ),
        None,
        None,
        # The cards: "input text longer than 256 word pieces is truncated" (MiniLM), 384 (mpnet).
        # all-MiniLM-L12-v2's sentence-transformers config truncates at 128; its card says 256.
        256,
        BERT_UNCASED,
        (("minilm", 384), ("mpnet", 768)),
        limits=(("mpnet", 384),),
        tokenized="minilm",  # mpnet has a vocabulary of its own
        accepts_blank=True,  # recorded: infinity embeds "" and "   " with all-MiniLM-L6-v2
        notes="Symmetric: no prompt on either side.",
    ),
    Family(
        "snowflake-arctic-embed v2.0",
        r"snowflake-arctic-embed-(m|l)-v2\.0",
        ("Snowflake/snowflake-arctic-embed-m-v2.0", "Snowflake/snowflake-arctic-embed-l-v2.0"),
        "query: ",
        None,
        8192,
        None,  # XLM-RoBERTa's vocabulary, not shipped
        (("-m-", 768), ("-l-", 1024)),
        accepts_blank=True,
        notes="Prefix on queries only.",
    ),
    Family(
        "snowflake-arctic-embed v1 / v1.5",
        r"snowflake-arctic-embed(-(xs|s|m|l|m-long|m-v1\.5))?",
        (
            "Snowflake/snowflake-arctic-embed-xs",
            "Snowflake/snowflake-arctic-embed-m-v1.5",
            "Snowflake/snowflake-arctic-embed-l",
        ),
        BGE_QUERY_INSTRUCTION,
        None,
        512,
        BERT_UNCASED,  # the cards: trained from bert-base-uncased and models built on it
        (("-xs$", 384), ("-s$", 384), ("-m($|-)", 768), ("-l$", 1024)),
        limits=(("m-long", 2048),),
        accepts_blank=True,
        notes="The BGE English instruction on queries only.",
    ),
    Family(
        "OpenAI text-embedding",
        r"text-embedding-(3-small|3-large|ada-002)",
        ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"),
        None,
        None,
        8191,
        None,  # tiktoken's cl100k_base, not shipped
        (("3-small", 1536), ("3-large", 3072), ("ada-002", 1536)),
        accepts_blank=False,
        notes="No prompt on either side.",
    ),
)
"""Every known model family, once. ``profile_for`` gives the first one that matches."""

_TAG_ALIASES = {
    # Ollama library names for models whose own name is longer.
    "bge-large": "BAAI/bge-large-en-v1.5",
    "bge-base": "BAAI/bge-base-en-v1.5",
    "all-minilm": "sentence-transformers/all-MiniLM-L6-v2",
}
"""Short names some servers use (Ollama's library tags) for models of the table."""


def _bare(model: str) -> str:
    # Servers such as Ollama name models "bge-large:latest" or "org/bge-base-en-v1.5".
    name = model.split(":", 1)[0]
    return _TAG_ALIASES.get(name, name)


def _tail(model: str) -> str:
    return _bare(model).rsplit("/", 1)[-1].lower().replace("_", "-")


def profile_for(model: str) -> Profile | None:
    """The profile of ``model`` (any spelling servers use), or None for a model not in the table."""
    tail = _tail(model)
    family = next((f for f in PROFILES if f.matches(tail)), None)
    if family is None:
        return None
    tag = model.split(":", 1)[1].lower() if ":" in model else ""
    return Profile(
        family=family.name,
        query_prompt=family.query_prompt,
        document_prompt=family.document_prompt,
        max_tokens=family.limit_of(tail),
        tokenizer=family.tokenizer_of(tail),
        dimension=family.dimension_of(tail, tag),
        accepts_blank=family.accepts_blank,
    )


KNOWN_DIMENSIONS: Mapping[str, int] = {
    name: dim
    for family in PROFILES
    for name in family.examples
    if (dim := family.dimension_of(_tail(name))) is not None
}
"""The dimension of every example model in the table (kept for callers of the old constant)."""


def is_bge_model(model: str) -> bool:
    """True for the BGE English models (bge-small/base/large-en, v1 or v1.5), under any org prefix."""
    profile = profile_for(model)
    return profile is not None and profile.family == PROFILES[0].name


def default_query_instruction(model: str) -> str | None:
    """The query prefix a model gets when the caller does not choose one (its profile's)."""
    profile = profile_for(model)
    return profile.query_prompt if profile else None


def default_document_instruction(model: str) -> str | None:
    """The document prefix a model gets when the caller does not choose one (its profile's)."""
    profile = profile_for(model)
    return profile.document_prompt if profile else None


def blank_texts_allowed(model: str) -> bool:
    """Whether blank texts may be sent for ``model``: its profile says its servers embed them."""
    profile = profile_for(model)
    return profile is not None and profile.accepts_blank


def expected_dimension(model: str) -> int | None:
    """The vector length a model is known to return, if known."""
    profile = profile_for(model)
    return profile.dimension if profile else None


def token_limit(model: str) -> int | None:
    """The token window the long-text policy applies to ``model``: only where it counts exactly.

    None for a model without a profile, or whose profile has no limit or no shipped tokenizer:
    such texts are sent as they are.
    """
    profile = profile_for(model)
    if profile is None or profile.tokenizer is None:
        return None
    return profile.max_tokens


def policy_window(model: str) -> int | None:
    """The token window the long-text policy applies to ``model``; None: texts go as they are.

    The window of every family whose tokenizer the package ships, counted exactly with it
    (``token_limit``): BGE English 512, e5 (English) 512, all-MiniLM 256, gte and
    snowflake-arctic-embed v1 512 (their long variants 8,192 and 2,048), nomic-embed 8,192.
    """
    return token_limit(model)


def same_model(served: str, requested: str) -> bool:
    """Whether a reply's model name is the requested model, spelled as servers spell it.

    Equal ignoring case, or equal in the last path segment without a ``:tag``
    (``BAAI/bge-base-en-v1.5``, ``bge-base-en-v1.5``, ``/models/bge-base-en-v1.5``), or the
    same model under a short tag (``bge-base``).
    """
    if served.lower() == requested.lower():
        return True

    def tail(name: str) -> str:
        return _bare(name).rsplit("/", 1)[-1].lower()

    return tail(served) == tail(requested)


def _cell(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):  # quoted, so that a trailing space or a newline shows
        return "`" + repr(value).replace("|", "\\|") + "`"
    return str(value)


def profiles_table() -> str:
    """The profile table as Markdown (docs/models.md holds this text between its markers)."""
    rows = [
        "| Family | Models | Query prompt | Document prompt | Tokens | Counted exactly | "
        "Dimension | Servers embed blank texts | Notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for family in PROFILES:
        profiles = [(name, profile_for(name)) for name in family.examples]
        dims = ", ".join(
            f"{p.dimension} ({name.rsplit('/', 1)[-1]})"
            for name, p in profiles
            if p and p.dimension
        )
        limits = sorted({p.max_tokens for _, p in profiles if p and p.max_tokens})
        exact = {p.tokenizer for _, p in profiles if p}
        cells = [
            family.name,
            ", ".join(f"`{name}`" for name in family.examples),
            _cell(family.query_prompt),
            _cell(family.document_prompt),
            " / ".join(f"{n:,}" for n in limits) or "unknown",
            "yes" if exact == {BERT_UNCASED} else ("some" if BERT_UNCASED in exact else "estimate"),
            dims or "any",
            "yes" if family.accepts_blank else "no",
            family.notes.replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# -- messages that depend on the model or the server -------------------------------------------


def _is_aimlapi(base_url: str | None) -> bool:
    host = (urlsplit(base_url).hostname or "").lower() if base_url else "api.aimlapi.com"
    return host == "aimlapi.com" or host.endswith(".aimlapi.com")


def missing_key_message(how: str, base_url: str | None = None) -> str:
    """The error for a missing API key, naming both cases; ``how`` says how to give one here.

    ``how`` is the surface's own way (``"pass api_key=... or set AIMLAPI_API_KEY"``,
    ``"set AIMLAPI_API_KEY"`` on the command line). The case that fits ``base_url`` (None:
    the AI/ML API) comes first.
    """
    aiml = "the AI/ML API needs your key (from your account at aimlapi.com)"
    placeholder = (
        "a server that checks no key (TEI, infinity, vLLM, Ollama or the local server started "
        'without one) takes any placeholder, such as "unused"'
    )
    cases = (aiml, placeholder) if _is_aimlapi(base_url) else (placeholder, aiml)
    return f"no API key: {how}. {cases[0][0].upper()}{cases[0][1:]}; {cases[1]}."


def token_policy_notice(model: str, long_text: str) -> str | None:
    """What to say (once) when ``long_text`` was asked for and cannot apply to ``model``; else None.

    The policy needs the model's window and its tokenizer; without them the texts are sent
    as they are and the server applies its own limit (it may cut them, or refuse them).
    """
    if long_text == "none" or policy_window(model) is not None:
        return None
    profile = profile_for(model)
    if profile is None:
        why = f"{model!r} is not a model the package knows (see docs/models.md)"
    elif profile.max_tokens is None:
        why = f"the window of {model!r} is not known"
    else:  # a window without a shipped tokenizer (token_limit needs both)
        why = (
            f"the package does not ship the tokenizer of {model!r}, so it cannot count its "
            f"{profile.max_tokens:,}-token window exactly"
        )
    return (
        f"long_text={long_text!r} does not apply: {why}. Texts are sent as they are, and the "
        "server applies its own limit to long ones"
    )


def model_mismatch_message(served: str, requested: str, base_url: str) -> str:
    """The one warning for a reply whose model is not the one asked for: what it means, no advice.

    It says whose vectors they are and which model's prompts and window were applied; it
    gives no advice that would change either, since a client may name a model on purpose
    (one served name per side, or a gateway's alias).
    """
    profile = profile_for(requested)
    applied = (
        f"the prompts and token window applied are those of {requested!r} ({profile.family})"
        if profile
        else f"{requested!r} is not a model the package knows, so no prompt or token window "
        "was applied"
    )
    return (
        f"the server at {base_url} answered with model {served!r}, not {requested!r} as asked: "
        f"the vectors are those of {served!r}, and {applied}"
    )


_noticed: set[tuple[str, str]] = set()
_noticed_lock = threading.Lock()


def first_token_policy_notice(model: str, long_text: str) -> str | None:
    """``token_policy_notice`` for a policy asked for by name, the first time in this process.

    Only ``"error"`` counts as asked for: ``"truncate"`` is the default, and would be said for
    every model the package does not know. Said once per process for a model and a policy.
    """
    if long_text != "error":
        return None
    notice = token_policy_notice(model, long_text)
    with _noticed_lock:
        if notice is None or (model, long_text) in _noticed:
            return None
        _noticed.add((model, long_text))
    return notice
