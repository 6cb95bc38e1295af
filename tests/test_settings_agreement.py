"""The four surfaces agree with the one definition of every setting (``_settings.SETTINGS``).

The core clients (sync and async), the LangChain and LlamaIndex adapters and the command line:
the same names, types and defaults, the same environment variables, the same peers' names,
and for every bad value the same error (``ConfigurationError``, with the same message).
Adding a setting to the definition without adding it everywhere fails here, naming it.
"""

from __future__ import annotations

import contextlib
import io
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import EllipsisType
from typing import Any

import pytest

from aiml_bge_integrations import AsyncEmbeddingsClient, ConfigurationError, EmbeddingsClient
from aiml_bge_integrations._settings import (
    FROM_MODEL,
    SETTINGS,
    SETTINGS_BY_NAME,
    Setting,
    settings_table,
)
from aiml_bge_integrations.cli import _client_settings, build_parser

KEY = "sk-agreement-test"
LOCAL = "http://127.0.0.1:9/v1"
"""Nothing is sent: every object here is built and inspected, never used."""

CLIENTS = (EmbeddingsClient, AsyncEmbeddingsClient)
INJECTED = {"http_client", "rate_limiter"}
"""Constructor arguments that are objects the caller shares, not settings."""

BAD: dict[str, list[Any]] = {
    "api_key": [5, ["k"]],
    "base_url": ["", 5, "ftp://example.com/v1", "http://example.com/v1"],
    "model": ["", "   ", 5],
    "batch_size": [0, -1, "8", "many", True, 1.5],
    "max_concurrency": [0, "4", False, 2.0],
    "max_retries": [-1, "6", True, 0.5],
    "timeout": [0, -1.0, "5", True, float("nan"), float("inf")],
    "deadline": [0, -2.5, "10", True],
    "query_instruction": [5, b"bytes"],
    "default_headers": [["x"], {"x": 5}, {"Authorization": "Bearer k"}],
    "encoding_format": ["int8", "", 5],
    "long_text": ["chop", None, True],
    "allow_insecure_http": ["yes", 1, None],
    "adaptive_concurrency": ["no", 0, None],
    "requests_per_minute": [0, -5.0, "60", True],
    "tokens_per_minute": [0, "1000", False],
    "max_response_bytes": [0, -1, "1000", True, 1.5],
    "cache": ["", "  ", 5, b"cache.sqlite"],
    "trace_requests": ["yes", 1, None],
    "show_progress": ["yes", 1, None],
}
"""Bad values for every setting (a new setting must add its own here)."""

GOOD: dict[str, Any] = {
    "base_url": "http://127.0.0.1:8/v1",
    "model": "BAAI/bge-small-en-v1.5",
    "batch_size": 7,
    "max_concurrency": 3,
    "max_retries": 0,
    "timeout": 5,
    "deadline": 9.5,
    "query_instruction": None,
    "default_headers": {"X-Team": "search"},
    "encoding_format": "base64",
    "long_text": "error",
    "allow_insecure_http": True,
    "adaptive_concurrency": False,
    "requests_per_minute": 120,
    "tokens_per_minute": 5000.5,
    "max_response_bytes": 50_000_000,
    "cache": "embeddings-cache.sqlite",
    "trace_requests": True,
    "show_progress": False,
}
"""One good non-default value for every setting but the key."""


def _surfaces(setting: Setting) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The constructors that take ``setting``, by surface name."""
    if "client" in setting.surfaces:
        yield "EmbeddingsClient", EmbeddingsClient
        yield "AsyncEmbeddingsClient", AsyncEmbeddingsClient
    if "langchain" in setting.surfaces:
        langchain = pytest.importorskip("aiml_bge_integrations.langchain")
        yield "AimlBgeEmbeddings", langchain.AimlBgeEmbeddings
    if "llama_index" in setting.surfaces:
        llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
        yield "AimlBgeEmbedding", llama_index.AimlBgeEmbedding


def _build(make: Callable[..., Any], **settings: Any) -> Any:
    settings.setdefault("api_key", KEY)
    settings.setdefault("base_url", LOCAL)
    return make(**settings)


def _value(obj: Any, name: str) -> Any:
    # The adapters hold the key as a SecretStr, the clients as their own holder.
    if name == "api_key":
        key = obj._key if hasattr(obj, "_key") else obj.api_key
        return key.get() if hasattr(key, "get") else key.get_secret_value()
    if name.endswith("_per_minute") and not hasattr(obj, name):  # a client holds its limiter
        return getattr(obj.rate_limiter, name) if obj.rate_limiter else None
    return getattr(obj, name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# -- names, types, defaults -----------------------------------------------------------------


def test_every_setting_has_bad_and_good_values_here() -> None:
    assert set(BAD) == set(SETTINGS_BY_NAME)
    assert set(GOOD) == set(SETTINGS_BY_NAME) - {"api_key"}


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
def test_the_clients_signatures_are_the_definition(client: type[Any]) -> None:
    import inspect

    signature = inspect.signature(client.__init__)
    params = {n: p for n, p in signature.parameters.items() if n != "self"}
    expected = [s.name for s in SETTINGS if "client" in s.surfaces]
    assert [n for n in params if n not in INJECTED] == expected  # same names, same order
    hints = typing.get_type_hints(client.__init__)
    for name in expected:
        setting = SETTINGS_BY_NAME[name]
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == setting.signature_default, name
        want = setting.type | EllipsisType if setting.default is FROM_MODEL else setting.type
        assert hints[name] == want, name


def test_the_adapters_fields_are_the_definition() -> None:
    langchain = pytest.importorskip("aiml_bge_integrations.langchain")
    llama_index = pytest.importorskip("aiml_bge_integrations.llama_index")
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import SecretStr

    own = {
        "langchain": {"http_client", "http_async_client", "rate_limiter"},
        "llama_index": {"http_client", "http_async_client", *BaseEmbedding.model_fields},
    }
    for surface, cls in (
        ("langchain", langchain.AimlBgeEmbeddings),
        ("llama_index", llama_index.AimlBgeEmbedding),
    ):
        fields = cls.model_fields
        expected = {s.name for s in SETTINGS if surface in s.surfaces}
        assert set(fields) - own[surface] == expected, surface
        for name in expected:
            setting = SETTINGS_BY_NAME[name]
            assert fields[name].description == setting.doc, (surface, name)
            want = setting.type
            if name == "api_key":
                want = SecretStr | None
            elif setting.env is not None:
                want = str  # always resolved: given, else the variable, else the default
            annotation = fields[name].annotation
            assert annotation == want, (surface, name, annotation)


def test_the_command_line_flags_are_the_definition() -> None:
    embed = build_parser()._subparsers._group_actions[0].choices["embed"]  # type: ignore[union-attr]
    flags = {opt for action in embed._actions for opt in action.option_strings}
    for setting in SETTINGS:
        if setting.flag:
            assert _flag(setting.name) in flags, setting.name
        else:
            assert _flag(setting.name) not in flags, setting.name
    # No flag given: the client gets nothing from the command line, so the defaults apply.
    args = build_parser().parse_args(["embed", "in.txt", "-o", "out.jsonl"])
    assert _client_settings(args) == {}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_defaults_agree(setting: Setting) -> None:
    built = {label: _build(make) for label, make in _surfaces(setting)}
    expected = KEY if setting.name == "api_key" else setting.default
    if setting.name == "base_url":
        expected = LOCAL
    if setting.default is FROM_MODEL:
        expected = "Represent this sentence for searching relevant passages: "
    for label, obj in built.items():
        value = _value(obj, setting.name)
        if setting.name == "default_headers":
            value = value or None  # the clients keep {} where the adapters keep None
        assert value == expected, label


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.env], ids=lambda s: s.name)
def test_environment_defaults_agree(setting: Setting, monkeypatch: pytest.MonkeyPatch) -> None:
    assert setting.env is not None
    value = {"api_key": "sk-from-env", "base_url": "http://127.0.0.1:7/v1"}.get(
        setting.name, "BAAI/bge-large-en-v1.5"
    )
    monkeypatch.setenv(setting.env, value)
    for label, make in _surfaces(setting):
        # Not given (or given as None): the variable.
        obj = (
            make(api_key=KEY)
            if setting.name == "base_url"
            else _build(make, **{setting.name: None})
        )
        assert _value(obj, setting.name) == value, label
        # Given explicitly, the setting wins over its variable.
        if setting.name != "api_key":
            assert (
                _value(_build(make, **{setting.name: GOOD[setting.name]}), setting.name)
                == (GOOD[setting.name])
            ), label


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.name != "api_key"], ids=lambda s: s.name
)
def test_a_good_value_reaches_the_core_from_every_surface(setting: Setting) -> None:
    value = GOOD[setting.name]
    for label, make in _surfaces(setting):
        obj = _build(make, **{setting.name: value})
        assert _value(obj, setting.name) == value, label
        core = obj.client if hasattr(obj, "client") else obj
        if "client" in setting.surfaces:
            held = _value(core, setting.name)
            assert (held or None if setting.name == "default_headers" else held) == value, label


# -- errors -----------------------------------------------------------------------------------


def _message(make: Callable[..., Any], name: str, value: Any) -> str | None:
    """The ``ConfigurationError`` message ``make`` gives for the value, or None if accepted."""
    try:
        _build(make, **{name: value})
    except ConfigurationError as err:
        assert type(err) is ConfigurationError, (name, value, type(err))
        return str(err)
    return None


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_surface_gives_a_bad_value_the_same_error(setting: Setting) -> None:
    for value in BAD[setting.name]:
        messages = {
            label: _message(make, setting.name, value) for label, make in _surfaces(setting)
        }
        assert None not in messages.values(), (value, messages)
        assert len(set(messages.values())) == 1, (value, messages)
        message = next(iter(messages.values()))
        assert message is not None
        assert setting.name in message or "plain http" in message, message
        if setting.name == "api_key":
            assert "5" not in message and "'k'" not in message  # a key's value never shows


def _cli_error(argv: list[str]) -> str | None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
        build_parser().parse_args(argv)
        return None
    return err.getvalue()


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.flag and s.type is not bool], ids=lambda s: s.name
)
def test_the_command_line_gives_a_bad_value_the_clients_error(setting: Setting) -> None:
    # The command line turns its text into the setting's type first; what it then refuses,
    # it refuses with the clients' message, and what it accepts, the clients accept.
    for value in BAD[setting.name]:
        if value is None:
            continue
        text = str(value)
        try:
            parsed: Any = (setting.cli_type or str)(text)
        except ValueError:
            parsed = text
        said = _cli_error(["embed", "in.txt", "-o", "o.jsonl", _flag(setting.name), text])
        try:
            setting.check(setting.name, parsed)
        except ConfigurationError as err:
            expected = str(err)
            assert _message(EmbeddingsClient, setting.name, parsed) == expected
            assert said is not None, text
            assert " ".join(expected.split()) in " ".join(said.split()), (text, said)
        else:
            # What needs another setting to judge (plain http and allow_insecure_http) is
            # judged when the client is built, as in Python.
            assert said is None, (text, said)


# -- the peers' names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "setting"),
    [(a, s) for s in SETTINGS for a in s.aliases],
    ids=lambda x: x if isinstance(x, str) else x.name,
)
def test_every_alias_is_accepted_by_its_adapter_and_means_the_setting(
    alias: str, setting: Setting
) -> None:
    surface = setting.aliases[alias]
    module = pytest.importorskip(f"aiml_bge_integrations.{surface}")
    cls = module.AimlBgeEmbeddings if surface == "langchain" else module.AimlBgeEmbedding
    value = GOOD[setting.name]
    obj = _build(cls, **{alias: value}) if alias != "api_base" else cls(api_key=KEY, api_base=value)
    assert _value(obj, setting.name) == value
    with pytest.raises(ConfigurationError, match=f"{alias} is another name for {setting.name}"):
        _build(cls, **{alias: value, setting.name: value})
    # The core clients keep their own names only.
    with pytest.raises(TypeError):
        EmbeddingsClient(api_key=KEY, **{alias: value})


# -- the reference in the docs ------------------------------------------------------------------


def test_the_docs_reference_table_is_the_definition() -> None:
    page = Path(__file__).parents[1] / "docs" / "settings-notes.md"
    text = page.read_text(encoding="utf-8")
    begin, end = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"
    assert begin in text and end in text
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == settings_table(), (
        "docs/settings-notes.md is out of date: replace the table between the markers with "
        "aiml_bge_integrations._settings.settings_table()"
    )
