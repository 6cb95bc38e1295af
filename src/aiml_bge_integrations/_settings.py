"""Every setting of the package, defined once: name, type, default, environment variable, check.

``SETTINGS`` is the one definition. From it come the checks and defaults every entry point
applies once, where the settings enter (``check_settings``; ``resolve_settings`` for the
command line, the Ray planner and the adapters, which also takes the peers' names), both
adapters' fields, the command line's flags, and the settings reference in the docs; ``tests/test_settings_agreement.py`` checks that the
four surfaces agree with it on names, types, defaults and the error each bad value gets.
To add a setting, add one ``Setting`` to ``SETTINGS``, a typed keyword parameter to the two
clients (their signatures are written out, so that editors and mypy see them) and a field to
each adapter (``setting_field(name)``); the command line's flag and the docs table follow from
the definition, and the agreement test names whatever is still missing (it also wants a bad
and a good value for the new setting).

Every bad value raises ``ConfigurationError`` (a ``ValueError``) naming the setting, on every
surface: the clients, both adapters (which unwrap it from pydantic's ``ValidationError``) and
the command line (which prints its message and exits 2). Values are not coerced: ``"8"`` is
not a batch size anywhere in Python; the command line turns its text into the setting's type
first.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from ._models import (  # model facts live in _models; re-exported here for their callers
    BGE_MAX_TOKENS,
    BGE_QUERY_INSTRUCTION,
    KNOWN_DIMENSIONS,
    blank_texts_allowed,
    default_document_instruction,
    default_query_instruction,
    expected_dimension,
    is_bge_model,
    same_model,
)
from .errors import ConfigurationError

__all__ = [
    "ADAPTER_SURFACES",
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "BGE_MAX_TOKENS",
    "BGE_QUERY_INSTRUCTION",
    "CLIENT_SETTINGS",
    "DEFAULT_BASE_URL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "FROM_MODEL",
    "KNOWN_DIMENSIONS",
    "LONG_TEXT_POLICIES",
    "MODEL_ENV",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "SecretValue",
    "Setting",
    "aliases_for",
    "check_settings",
    "default_document_instruction",
    "default_query_instruction",
    "env_default",
    "expected_dimension",
    "int_at_least",
    "is_bge_model",
    "is_loopback_host",
    "rename_aliases",
    "resolve_settings",
    "same_model",
    "settings_table",
    "unknown_name_message",
]

API_KEY_ENV = "AIMLAPI_API_KEY"
"""Environment variable holding the API key."""
BASE_URL_ENV = "AIMLAPI_BASE_URL"
"""Environment variable overriding the base URL."""
MODEL_ENV = "AIMLAPI_EMBEDDING_MODEL"
"""Environment variable overriding the default model."""

DEFAULT_BASE_URL = "https://api.aimlapi.com/v1"
DEFAULT_MODEL = "BAAI/bge-base-en-v1.5"
DEFAULT_BATCH_SIZE = 128
"""Inputs per request. No cap is published for the AI/ML API; servers that have one are learned."""
DEFAULT_MAX_CONCURRENCY = 16
"""The most requests in flight per client; below it, the client keeps what the server sustains."""
DEFAULT_MAX_RETRIES = 6
DEFAULT_TIMEOUT = 60.0
"""Seconds for one HTTP request (connect, write, read, pool)."""

LONG_TEXT_POLICIES = ("truncate", "error", "none")
"""What the core does with an input over the model's token window (docs/models.md)."""

FROM_MODEL = "the model's default"
"""The documented default of a setting whose default follows from ``model``."""


class SecretValue(Protocol):
    """A secret holder such as pydantic's ``SecretStr``: the key is read with ``get_secret_value``."""

    def get_secret_value(self) -> str:
        """The secret itself."""
        ...


# -- checks: each returns the value to use, or raises ConfigurationError naming the setting -----


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def int_at_least(minimum: int) -> Callable[[str, Any], int]:
    """A check for an integer setting of at least ``minimum`` (``True`` is not an integer here)."""

    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigurationError(f"{name} must be an integer >= {minimum}, not {value!r}")
        return value

    return check


def _positive_seconds(name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def optional(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)

    return optional


def _positive_rate(name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number per minute, not {value!r}")
    return float(value)


def _one_of(*choices: str | None) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
            shown = ", ".join(repr(c) for c in choices)
            raise ConfigurationError(f"{name} must be one of {shown}, not {value!r}")
        return value

    return check


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string, not {value!r}")
    return value


def _url(name: str, value: Any) -> str:
    url = _text(name, value).strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        # Not shown: whatever it holds, it is no URL, and it may hold a key.
        raise ConfigurationError(f"{name} must be an http(s) URL") from None
    if "@" in parts.netloc or "?" in url or "#" in url:
        # A URL is printed (repr, errors, logs) and stored (the job's state): never a key in it.
        # The value is not shown, since what it carries may be the key.
        raise ConfigurationError(
            f"{name} must not carry credentials, a query or a fragment (user:password@host, "
            f"?api_key=...): pass the key as api_key (or set {API_KEY_ENV}), and other "
            "request headers as default_headers"
        )
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{name} must be an http(s) URL, not {value!r}")
    return url


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {value!r}")
    return value


def _instruction(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string or None, not {value!r}")
    return value


def _headers(name: str, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigurationError(f"{name} must map header names to string values")
    if any(k.lower() in ("authorization", "proxy-authorization") for k in value):
        # Headers are settings (printed, serialised, pickled); credentials are not.
        raise ConfigurationError("put the API key in api_key, not in default_headers")
    return dict(value)


def _cache_path(name: str, value: Any) -> str | None:
    # Only the value's shape: the file is opened (and refused if it is not a cache) at the
    # first call, so that building a client or an adapter writes nothing.
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a file path or None, not {value!r}")
    return value


def _key(name: str, value: Any) -> Any:
    # Never shows the value: it may be a key of the wrong type.
    from ._secrets import SecretKey  # the core's own holder, which the adapters pass on

    if value is None or isinstance(value, str | SecretKey) or hasattr(value, "get_secret_value"):
        return value
    raise ConfigurationError(
        f"{name} must be a string (or a SecretStr), not a {type(value).__name__}"
    )


# -- the definition ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting: what every surface (clients, adapters, command line, docs) derives from."""

    name: str
    """The keyword everywhere (``--name-with-dashes`` on the command line)."""
    type: Any
    """The type of the core clients' keyword parameter."""
    default: Any
    """The documented default: used when the setting is not given (and its variable is unset)."""
    doc: str
    """One sentence on what it does; the adapters' field descriptions and the flags' help."""
    check: Callable[[str, Any], Any]
    """Returns the value to use, or raises ``ConfigurationError`` naming the setting."""
    env: str | None = None
    """Environment variable read when the setting is not given (an empty one counts as unset)."""
    aliases: tuple[str, ...] = ()
    """The peers' names for it (langchain-openai's, LlamaIndex's ``OpenAIEmbedding``'s), which
    both adapters accept; the core clients keep their own names only."""
    flag: bool = True
    """Whether ``aiml-bge embed`` has a flag for it."""
    cli_type: Callable[[str], Any] | None = None
    """How the command line turns its text into the setting's type (None: a plain string)."""
    choices: tuple[str, ...] = ()
    """The allowed values, for the command line's help."""
    surfaces: tuple[str, ...] = ("client", "langchain", "llama_index")
    """Where the setting exists: the core clients and the two adapters, or some of them."""

    @property
    def signature_default(self) -> Any:
        """The default written in the clients' signatures (None or ``...`` when resolved later)."""
        if self.env is not None:
            return None
        return ... if self.default is FROM_MODEL else self.default


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "api_key",
        str | SecretValue | None,
        None,
        "API key, sent as a Bearer token; never printed, logged, serialised or pickled.",
        _key,
        env=API_KEY_ENV,
        aliases=("openai_api_key",),
        flag=False,
    ),
    Setting(
        "base_url",
        str | None,
        DEFAULT_BASE_URL,
        "Root of the OpenAI-compatible API; requests go to {base_url}/embeddings (the AI/ML "
        "API, OpenAI, vLLM and Ollama: a root ending in /v1; infinity and TEI: the server's "
        "root, no /v1).",
        _url,
        env=BASE_URL_ENV,
        aliases=("api_base", "openai_api_base"),
    ),
    Setting(
        "model",
        str | None,
        DEFAULT_MODEL,
        "Model name sent with every request.",
        _text,
        env=MODEL_ENV,
        aliases=("model_name",),
    ),
    Setting(
        "batch_size",
        int,
        DEFAULT_BATCH_SIZE,
        "Texts per request (lowered automatically when a server states a smaller limit).",
        int_at_least(1),
        aliases=("chunk_size",),
        cli_type=int,
    ),
    Setting(
        "max_concurrency",
        int,
        DEFAULT_MAX_CONCURRENCY,
        "The most requests awaiting their reply at once, across every call on one client "
        "(with adaptive_concurrency, the cap of what the client finds the server sustains).",
        int_at_least(1),
        cli_type=int,
    ),
    Setting(
        "adaptive_concurrency",
        bool,
        True,
        "Find and follow the concurrency the server sustains (from its refusals and round "
        "trips), up to max_concurrency; False keeps max_concurrency in flight.",
        _flag,
    ),
    Setting(
        "discover_limits",
        bool,
        True,
        "Ask a self-hosted server once what it accepts (TEI's GET /info, GET {base_url}/models) "
        "and plan batches within its published batch and token limits; never asked of the "
        "AI/ML API or OpenAI. False sends no such request.",
        _flag,
    ),
    Setting(
        "max_retries",
        int,
        DEFAULT_MAX_RETRIES,
        "Retries per request for 408, 409, 429, 5xx, timeouts and dropped connections.",
        int_at_least(0),
        cli_type=int,
    ),
    Setting(
        "timeout",
        float,
        DEFAULT_TIMEOUT,
        "Seconds for one HTTP request.",
        _positive_seconds,
        aliases=("request_timeout",),
        cli_type=float,
    ),
    Setting(
        "deadline",
        float | None,
        None,
        "Seconds for one whole call across its retries (None: no overall limit; on the "
        "command line, each batch is one call).",
        _optional(_positive_seconds),
        cli_type=float,
    ),
    Setting(
        "query_instruction",
        str | None,
        FROM_MODEL,
        "Prefix for queries only, never documents; unset gives the model's default (the BGE "
        "retrieval instruction for BGE English models), None disables it.",
        _instruction,
        flag=False,
    ),
    Setting(
        "document_instruction",
        str | None,
        FROM_MODEL,
        "Prefix for documents only, never queries; unset gives the model's default (e5's "
        "'passage: ', nomic's 'search_document: '; none for most models), None disables it.",
        _instruction,
    ),
    Setting(
        "query_input_type",
        str | None,
        None,
        "Value of the request field input_type sent with queries only (servers that take the "
        "side as a field: 'query' for NVIDIA NIM and e5 servers, 'search_query' for "
        "Cohere-compatible gateways); None: not sent.",
        _optional(_text),
        flag=False,
    ),
    Setting(
        "document_input_type",
        str | None,
        None,
        "Value of the request field input_type sent with documents only ('passage' or "
        "'document' for NVIDIA NIM and e5 servers, 'search_document' for Cohere-compatible "
        "gateways); None: not sent.",
        _optional(_text),
    ),
    Setting(
        "allow_blank_texts",
        bool,
        FROM_MODEL,
        "Send empty and whitespace-only texts as they are (for servers that embed them); unset "
        "gives the model's profile (True for the families known to take them), False refuses "
        "them before anything is sent.",
        _flag,
    ),
    Setting(
        "default_headers",
        Mapping[str, str] | None,
        None,
        "Extra headers on every request (they cannot carry Authorization).",
        _headers,
        flag=False,
    ),
    Setting(
        "encoding_format",
        Literal["float", "base64"] | None,
        None,
        "Vector encoding to ask the server for: None (not sent), 'float' or 'base64'.",
        _one_of(None, "float", "base64"),
        choices=("float", "base64"),
    ),
    Setting(
        "long_text",
        Literal["truncate", "error", "none"],
        "truncate",
        "Inputs over the model's token window (BGE English: 512; docs/models.md lists each "
        "family's): cut at the last whole word that fits (with a warning), refuse them before "
        "sending anything (TextTooLongError), or send them as they are. Applies where the "
        "package counts the model's tokens exactly.",
        _one_of(*LONG_TEXT_POLICIES),
        choices=LONG_TEXT_POLICIES,
    ),
    Setting(
        "allow_insecure_http",
        bool,
        False,
        "Allow sending the key over plain http to a host outside loopback.",
        _flag,
    ),
    Setting(
        "requests_per_minute",
        float | None,
        None,
        "Client-side pace of requests, shared by every call on the client (None: no pace).",
        _optional(_positive_rate),
        cli_type=float,
    ),
    Setting(
        "tokens_per_minute",
        float | None,
        None,
        "Client-side pace of tokens, shared by every call on the client (None: no pace).",
        _optional(_positive_rate),
        cli_type=float,
    ),
    Setting(
        "max_response_bytes",
        int | None,
        None,
        "The most bytes read of one reply (None: derived from each request, from its inputs, "
        "the model's dimension and the encoding; a larger reply is a ResponseTooLargeError).",
        _optional(int_at_least(1)),
        cli_type=int,
    ),
    Setting(
        "cache",
        str | None,
        None,
        "Path of an embedding cache file (SQLite, shared by processes): texts embedded before "
        "with the same model, prompt, long-text policy and server are not sent again (None: "
        "no cache).",
        _cache_path,
    ),
    Setting(
        "trace_requests",
        bool,
        False,
        "With OpenTelemetry: a child span per HTTP attempt (status, wait, retry cause) under "
        "each call's span.",
        _flag,
        flag=False,
    ),
    Setting(
        "show_progress",
        bool,
        False,
        "Show a tqdm progress bar that advances per batch in embed_documents (needs tqdm).",
        _flag,
        aliases=("show_progress_bar",),
        flag=False,
        surfaces=("langchain",),
    ),
)
"""Every setting, once. The clients and adapters accept exactly these (plus their injected
objects: ``http_client``, ``rate_limiter``, LangChain's ``http_async_client`` and LlamaIndex's
own fields)."""

_MODEL_DEFAULTS: dict[str, Callable[[str], Any]] = {
    "query_instruction": default_query_instruction,
    "document_instruction": default_document_instruction,
    "allow_blank_texts": blank_texts_allowed,
}
"""How each setting whose default is ``FROM_MODEL`` follows from the model (its profile)."""

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
"""``SETTINGS`` by name."""

CLIENT_SETTINGS: tuple[str, ...] = tuple(s.name for s in SETTINGS if "client" in s.surfaces)
"""The settings of the core clients, which both adapters pass on to them."""


ADAPTER_SURFACES = ("langchain", "llama_index")
"""The framework adapters: they accept the peers' names (``Setting.aliases``) too."""


def aliases_for(surface: str) -> dict[str, str]:
    """The peers' names ``surface`` accepts (alias -> setting name): none for the clients."""
    if surface not in ADAPTER_SURFACES:
        return {}
    return {alias: s.name for s in SETTINGS if surface in s.surfaces for alias in s.aliases}


def rename_aliases(given: Mapping[str, Any], surface: str) -> dict[str, Any]:
    """``given`` with the peers' names ``surface`` accepts renamed to the settings' own names.

    Raises ``ConfigurationError`` when a setting is given under two names.
    """
    renamed = dict(given)
    for alias, name in aliases_for(surface).items():
        if alias in renamed:
            if name in renamed:
                raise ConfigurationError(f"{alias} is another name for {name}: give one of them")
            renamed[name] = renamed.pop(alias)
    return renamed


def env_default(name: str) -> Any:
    """The value of setting ``name`` when it is not given: its variable if set, else its default."""
    setting = SETTINGS_BY_NAME[name]
    if setting.env is not None:
        value = os.environ.get(setting.env, "").strip()
        if value:
            return value
    return None if setting.default is FROM_MODEL else setting.default


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    text = str(tp)
    for prefix in ("typing.", "collections.abc.", f"{__name__}."):
        text = text.replace(prefix, "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1] + " | None"
    return text


def settings_table() -> str:
    """The settings reference as a Markdown table (docs/settings-notes.md holds this text)."""
    where_names = {"client": "clients", "langchain": "LangChain", "llama_index": "LlamaIndex"}
    adapters = set(ADAPTER_SURFACES)
    rows = [
        "| Setting | Type | Default | Variable | Adapters also accept | Where | Meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = s.default if s.default is FROM_MODEL else f"`{s.default!r}`"
        aliases = ", ".join(f"`{a}`" for a in s.aliases) if adapters & set(s.surfaces) else ""
        where = ", ".join(where_names[w] for w in s.surfaces)
        if s.flag:
            where += ", CLI `--" + s.name.replace("_", "-") + "`"
        cells = [
            f"`{s.name}`",
            f"`{_type_name(s.type)}`",  # a code span may hold "|": tables do not split there
            default,
            f"`{s.env}`" if s.env else "",
            aliases,
            where,
            s.doc.replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def check_settings(given: Mapping[str, Any], surface: str = "client") -> dict[str, Any]:
    """Every setting of ``surface``, checked: the ones given, else their variable, else default.

    A setting given as ``None`` whose default comes from a variable counts as not given (the
    clients' signatures say ``base_url=None``); ``query_instruction`` and
    ``document_instruction`` not given (or ``...``) follow the model. Raises ``ConfigurationError`` naming the first bad setting.
    """
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if surface not in setting.surfaces:
            continue
        name = setting.name
        value = given.get(name, ...)
        if value is ... or (value is None and setting.env is not None):
            if setting.default is FROM_MODEL:
                values[name] = _MODEL_DEFAULTS[name](values["model"])
                continue
            value = env_default(name)
            if value is None:  # only the key has no default
                values[name] = None
                continue
        values[name] = setting.check(name, value)
    if "base_url" in values and "allow_insecure_http" in values:
        _check_transport(values["base_url"], values["allow_insecure_http"])
    return values


def resolve_settings(given: Mapping[str, Any], surface: str = "client") -> dict[str, Any]:
    """Every setting of ``surface``, resolved and checked once: what each part runs on.

    The one resolver for every entry point (the clients, the adapters, the command line, the
    Ray planner), so all of them see the same values: the settings given (under their own
    names or, on an adapter, the peers' names), else their environment variable
    (``AIMLAPI_EMBEDDING_MODEL``, ``AIMLAPI_BASE_URL``), else their default; the ones that
    follow the model (``query_instruction``, ``document_instruction``) from the model so resolved. The key, when one
    is given or set in ``AIMLAPI_API_KEY``, is held as a ``SecretKey`` (it prints as stars
    and pickles as its fingerprint); ``None`` when there is none.

    Raises ``ConfigurationError`` naming the first bad setting, a name that is no setting of
    ``surface``, or a setting given under two names.
    """
    from ._secrets import SecretKey  # _secrets imports this module

    renamed = rename_aliases(given, surface)
    known = {s.name for s in SETTINGS if surface in s.surfaces}
    unknown = sorted(set(renamed) - known)
    if unknown:
        raise ConfigurationError(unknown_name_message(unknown[0], known))
    values = check_settings(renamed, surface)
    key = values.get("api_key")
    if key is not None and not isinstance(key, SecretKey):
        text = key if isinstance(key, str) else key.get_secret_value()
        values["api_key"] = SecretKey(text.strip()) if text.strip() else None
    return values


def unknown_name_message(name: str, known: Iterable[str]) -> str:
    """What every surface says of a name it does not take: ``batchsize is not a setting (did
    you mean batch_size?)``."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"{name} is not a setting" + (f" (did you mean {close[0]}?)" if close else "")


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a URL's host name) is this machine: ``localhost`` or a loopback address.

    An address, not a prefix: ``127.0.0.1.example.com`` is a remote name like any other.
    """
    host = host.lower()
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_transport(base_url: str, allow_insecure_http: bool) -> None:
    # The one check that needs two settings: the key goes in a header of every request.
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() == "http" and not allow_insecure_http and not is_loopback_host(host):
        raise ConfigurationError(
            f"refusing to send the API key over plain http to {host}: use https, or set "
            "allow_insecure_http=True if this network is trusted"
        )
