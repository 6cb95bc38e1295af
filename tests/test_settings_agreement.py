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
    aliases_for,
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
    "base_url": [
        "",
        5,
        "ftp://example.com/v1",
        "http://example.com/v1",
        "https://user:pw-in-url@example.com/v1",
        "https://sk-in-url@example.com/v1",
        "https://example.com/v1?api_key=sk-in-url",
        "https://example.com/v1?",
        "https://example.com/v1#sk-in-url",
        "http://user:pw-in-url@127.0.0.1:9/v1",
    ],
    "model": ["", "   ", 5],
    "batch_size": [0, -1, "8", "many", True, 1.5],
    "max_concurrency": [0, "4", False, 2.0],
    "max_retries": [-1, "6", True, 0.5],
    "timeout": [0, -1.0, "5", True, float("nan"), float("inf")],
    "deadline": [0, -2.5, "10", True],
    "query_instruction": [5, b"bytes"],
    "document_instruction": [5, b"bytes"],
    "query_input_type": ["", "   ", 5],
    "document_input_type": ["", 5, b"passage"],
    "allow_blank_texts": ["yes", 1, None],
    "default_headers": [["x"], {"x": 5}, {"Authorization": "Bearer k"}],
    "encoding_format": ["int8", "", 5],
    "long_text": ["chop", None, True],
    "allow_insecure_http": ["yes", 1, None],
    "adaptive_concurrency": ["no", 0, None],
    "discover_limits": ["no", 0, None],
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
    "document_instruction": "passage: ",
    "query_input_type": "query",
    "document_input_type": "passage",
    "allow_blank_texts": True,
    "default_headers": {"X-Team": "search"},
    "encoding_format": "base64",
    "long_text": "error",
    "allow_insecure_http": True,
    "adaptive_concurrency": False,
    "discover_limits": False,
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
    if setting.default is FROM_MODEL:  # the default model's profile: a prefix on queries only
        expected = {
            "query_instruction": "Represent this sentence for searching relevant passages: ",
            "document_instruction": None,
            "allow_blank_texts": False,
        }[setting.name]
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
        if setting.name == "base_url" and isinstance(value, str) and "in-url" in value:
            assert "in-url" not in message, message  # a credential in a URL never shows
            assert "api_key" in message and "AIMLAPI_API_KEY" in message  # where it belongs


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


@pytest.mark.parametrize(
    "url",
    ["https://user:pw-in-url@example.com/v1", "http://127.0.0.1:9/v1?api_key=sk-in-url"],
)
@pytest.mark.parametrize("where", ["flag", "environment"])
def test_a_key_in_the_base_url_never_reaches_the_jobs_files(
    url: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiml_bge_integrations.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIMLAPI_API_KEY", KEY)
    (tmp_path / "in.txt").write_text("one passage\nanother passage\n", encoding="utf-8")
    argv = ["embed", "in.txt", "-o", "out.jsonl"]
    if where == "flag":
        argv += ["--base-url", url]
    else:
        monkeypatch.setenv("AIMLAPI_BASE_URL", url)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert code == 2, err.getvalue()
    assert "in-url" not in err.getvalue() and "api_key" in err.getvalue()
    # Refused before the job starts: no output, no work directory, no state.json.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


# -- the peers' names -------------------------------------------------------------------------


ADAPTERS = ("langchain", "llama_index")


def _adapter_class(surface: str) -> Any:
    module = pytest.importorskip(f"aiml_bge_integrations.{surface}")
    return module.AimlBgeEmbeddings if surface == "langchain" else module.AimlBgeEmbedding


@pytest.mark.parametrize(
    ("surface", "alias", "setting"),
    [(w, a, s) for s in SETTINGS for a in s.aliases for w in ADAPTERS if w in s.surfaces],
    ids=lambda x: x if isinstance(x, str) else x.name,
)
def test_every_alias_is_accepted_by_both_adapters_and_means_the_setting(
    surface: str, alias: str, setting: Setting
) -> None:
    cls = _adapter_class(surface)
    value = "sk-under-another-name" if setting.name == "api_key" else GOOD[setting.name]
    others = {"api_key": KEY, "base_url": LOCAL}
    others.pop(setting.name, None)
    obj = cls(**others, **{alias: value})
    assert _value(obj, setting.name) == value
    if "client" in setting.surfaces:
        assert _value(obj.client, setting.name) == value
    other = "sk-other" if setting.name == "api_key" else "http://127.0.0.1:5/v1"
    if setting.name not in ("api_key", "base_url"):
        other = {"model": "m2", "batch_size": 3, "timeout": 2.0, "show_progress": True}.get(
            setting.name, other
        )
    if surface == "llama_index" and alias == "model_name":
        # LlamaIndex's own field, which its to_dict() writes beside model: it must agree.
        assert _value(cls(**others, model=value, model_name=value), "model") == value
        with pytest.raises(ConfigurationError, match="disagree"):
            cls(**others, **{alias: value, setting.name: other})
    else:
        with pytest.raises(ConfigurationError, match=f"{alias} is another name for {setting.name}"):
            cls(**others, **{alias: value, setting.name: other})
    # The core clients keep their own names only.
    with pytest.raises(TypeError):
        EmbeddingsClient(api_key=KEY, **{alias: value})


def test_both_adapters_accept_the_same_peers_names() -> None:
    # What each name means is checked above, on each adapter.
    langchain, llama_index = aliases_for("langchain"), aliases_for("llama_index")
    peers = {"api_base", "openai_api_key", "openai_api_base", "model_name", "chunk_size"}
    assert peers <= set(langchain) and peers <= set(llama_index)
    assert {a: n for a, n in langchain.items() if a in llama_index} == llama_index
    assert set(langchain) - set(llama_index) == {"show_progress_bar"}  # LangChain's setting alone


@pytest.mark.parametrize("surface", ADAPTERS)
@pytest.mark.parametrize(
    ("argument", "named"),
    [
        ({"batchsize": 3}, "batchsize is not a setting (did you mean batch_size?)"),
        ({"openai_key": "k"}, "openai_key is not a setting"),
        ({"http_client": 5}, "http_client"),
        ({"http_async_client": "x"}, "http_async_client"),
    ],
)
def test_any_bad_argument_is_a_configuration_error_on_both_adapters(
    surface: str, argument: dict[str, Any], named: str
) -> None:
    cls = _adapter_class(surface)
    with pytest.raises(ConfigurationError) as info:
        cls(api_key="sk-never-shown", base_url=LOCAL, **argument)
    assert type(info.value) is ConfigurationError
    assert named in str(info.value)
    assert "sk-never-shown" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


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


# -- checked once, where they enter -----------------------------------------------------------


def test_resolve_settings_gives_every_entry_point_the_same_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pickle

    from aiml_bge_integrations._settings import resolve_settings

    monkeypatch.setenv("AIMLAPI_EMBEDDING_MODEL", "text-embedding-3-small")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://127.0.0.1:7/v1")
    monkeypatch.setenv("AIMLAPI_API_KEY", "sk-resolved-from-env")
    resolved = resolve_settings({"batch_size": 7})
    assert set(resolved) == {s.name for s in SETTINGS if "client" in s.surfaces}
    # From the environment, and what follows from the model so resolved.
    assert resolved["model"] == "text-embedding-3-small"
    assert resolved["base_url"] == "http://127.0.0.1:7/v1"
    assert resolved["query_instruction"] is None  # not a BGE model
    assert resolved["long_text"] == "truncate" and resolved["batch_size"] == 7
    # The key is held, never shown: not in a repr, not in a pickle.
    assert resolved["api_key"].get() == "sk-resolved-from-env"
    assert "sk-resolved" not in repr(resolved) and b"sk-resolved" not in pickle.dumps(resolved)
    # What the clients hold is what was resolved.
    with EmbeddingsClient() as client:
        for name in ("model", "base_url", "query_instruction", "long_text"):
            assert getattr(client, name) == resolved[name], name
    # The adapters' names, on an adapter's surface; names that are no setting are refused.
    assert resolve_settings({"chunk_size": 3}, "langchain")["batch_size"] == 3
    with pytest.raises(ConfigurationError, match="chunk_size is not a setting"):
        resolve_settings({"chunk_size": 3})
    with pytest.raises(ConfigurationError, match="did you mean max_retries"):
        resolve_settings({"max_retry": 3})
    # Two-setting checks too: plain http to a remote host.
    with pytest.raises(ConfigurationError, match="plain http"):
        resolve_settings({"base_url": "http://example.com/v1"})
    assert resolve_settings({"base_url": "http://example.com/v1", "allow_insecure_http": True})


@pytest.mark.parametrize("surface", ADAPTERS)
def test_building_an_adapter_builds_no_client(
    surface: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiml_bge_integrations import _adapter

    built: list[str] = []
    for name in ("EmbeddingsClient", "AsyncEmbeddingsClient"):
        real = getattr(_adapter, name)

        def counting(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            built.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(_adapter, name, counting)
    cls = _adapter_class(surface)
    obj = cls(api_key=KEY, base_url=LOCAL, max_concurrency=3)
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        cls(api_key=KEY, base_url=LOCAL, max_concurrency=0)  # checked all the same
    assert built == []
    assert obj.client.max_concurrency == 3 and obj.async_client.max_concurrency == 3
    assert built == ["EmbeddingsClient", "AsyncEmbeddingsClient"]
    obj.close()


# -- the command line's flags and Ray's keyword arguments ---------------------------------------


def _cli_argv(setting: Setting, value: Any) -> list[str]:
    if setting.type is bool:
        return [_flag(setting.name) if value else "--no-" + setting.name.replace("_", "-")]
    return [_flag(setting.name), str(value)]


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.flag], ids=lambda s: s.name)
def test_a_good_value_reaches_the_client_from_the_command_line(setting: Setting) -> None:
    from aiml_bge_integrations._settings import resolve_settings

    value = GOOD[setting.name]
    argv = ["embed", "in.txt", "-o", "out.jsonl", *_cli_argv(setting, value)]
    given = _client_settings(build_parser().parse_args(argv))
    assert given == {setting.name: value}
    others = {"base_url": LOCAL} if setting.name != "base_url" else {}
    assert resolve_settings({**others, **given})[setting.name] == value


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param(s, v, id=f"{s.name}={v!r}")
        for s in SETTINGS
        if "client" in s.surfaces and s.name != "api_key"  # Ray refuses a key argument
        for v in BAD[s.name]
    ],
)
def test_ray_gives_a_bad_keyword_argument_the_clients_error(setting: Setting, value: Any) -> None:
    # Without the ray extra, importing the module raises an ImportError that says so.
    ray = pytest.importorskip("aiml_bge_integrations.ray", exc_type=ImportError)
    others = {"base_url": LOCAL} if setting.name != "base_url" else {}
    expected = _message(EmbeddingsClient, setting.name, value)
    assert expected is not None
    with pytest.raises(ConfigurationError) as info:
        ray.embed_dataset(None, **others, **{setting.name: value})  # refused before the data
    assert str(info.value) == expected
