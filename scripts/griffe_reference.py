"""Griffe extension for the API reference: what reading the sources alone cannot show.

mkdocstrings reads the package's sources statically (``paths: [src]`` in mkdocs.yml). That
misses what the code computes, so this extension, loaded by mkdocs.yml, fills it in from the
code itself (the package is imported from ``src/`` next to this file):

- a **Settings** table on every class that takes settings: the core clients' from the one
  definition (``SETTINGS``), the adapters' from their pydantic fields (``model_fields``),
  each with its type, its default and one line on what it does;
- **defaults as values** in the clients' signatures (``batch_size: int = 128``, not the
  constant's name), and the ``...`` that means "follow the model" shown as such;
- **no private bases** (``_BaseClient``, a mixin from a private module) in a class's bases;
- docstring prose made Markdown: reST ``Title::`` blocks become code blocks (and roles such
  as ``:class:`Name``` code spans), LangChain's
  "Key init args" entries become lists, and ````Name```` of a documented public name
  becomes a link to it.

``tests/test_docs_reference.py`` builds the site and checks the result.
"""

from __future__ import annotations

import functools
import importlib
import operator
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

PACKAGE = "aiml_bge_integrations"

CLIENTS = ("EmbeddingsClient", "AsyncEmbeddingsClient")
"""The core clients, by their public name in the package."""

ADAPTERS = {
    "langchain.AimlBgeEmbeddings": "langchain",
    "llama_index.AimlBgeEmbedding": "llama_index",
}
"""The adapters, by their path under the package, with their surface in ``SETTINGS``."""

PUBLIC_MODULES = ("errors", "", "tokens", "langchain", "llama_index", "ray", "server", "cli")
"""The modules whose ``__all__`` names are documented in the reference ('' is the package);
the first that exports a name is the one that documents it (the errors: ``errors``)."""

MODEL_DEFAULT = "default_query_instruction(model)"
"""How the signatures show ``query_instruction``'s default: ``...`` in the code, which means
"the model's" (the BGE retrieval instruction for BGE English models, else none)."""


def _settings() -> Any:
    return importlib.import_module(f"{PACKAGE}._settings")


def type_text(tp: Any) -> str:
    """A type as the reader writes it: ``str | None``, ``Literal['a', 'b']``, ``httpx.Client``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        module = tp.__module__
        if module == "builtins" or module.startswith(PACKAGE):
            return tp.__name__
        return f"{module.split('.')[0]}.{tp.__name__}"
    text = str(tp)
    for prefix in ("typing.", "collections.abc.", "pydantic.types.", f"{PACKAGE}._settings."):
        text = text.replace(prefix, "")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    # Where a class lives is noise here: its name says it (httpx's keep their prefix).
    text = re.sub(r"\bhttpx\.(?:_\w+\.)+", "httpx.", text)
    text = re.sub(rf"\b{PACKAGE}\.(?:\w+\.)+", "", text)
    text = re.sub(r"SkipJsonSchema\[(.*)\]$", r"\1", text)
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 | None", text)
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    # A table cell's code span may hold "|" as it is: Markdown's tables do not split there.
    return f"`{text}`"


def _default_text(setting: Any) -> str:
    settings = _settings()
    if setting.default is settings.FROM_MODEL:
        return str(settings.FROM_MODEL)
    if setting.env is not None:
        shown = f"`${setting.env}`"
        return shown if setting.default is None else f"{shown}, else `{setting.default!r}`"
    return _code(repr(setting.default))


def _aliases_text(setting: Any, surface: str | None) -> str:
    """The peers' names an adapter takes for the setting (the core clients take none)."""
    aliases = setting.aliases
    if isinstance(aliases, dict):  # alias -> the one surface that takes it
        names = [alias for alias, where in aliases.items() if where == surface]
    else:  # every adapter takes them
        names = list(aliases) if surface in ("langchain", "llama_index") else []
    return " Also accepted as " + ", ".join(f"`{n}`" for n in names) + "." if names else ""


def _listing(rows: list[tuple[str, str, str, str]]) -> str:
    # A list rather than a table: the defaults and the meanings are too long for columns.
    return "\n".join(
        f"- **`{name}`** ({tp}, default {default}): {meaning}"
        for name, tp, default, meaning in rows
    )


def runtime_hints(cls: type) -> dict[str, Any]:
    """``cls.__init__``'s type hints, a generic base's type variables filled in for ``cls``.

    The clients share one ``__init__`` in a generic base (``http_client: _Http | None``);
    each client's own base says what ``_Http`` is (``httpx.Client``).
    """
    import typing

    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    bound: dict[Any, Any] = {}
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        params = getattr(origin, "__parameters__", ())
        bound.update(zip(params, typing.get_args(base), strict=False))
    if not bound:
        return hints

    def fill(tp: Any) -> Any:
        if tp in bound:
            return bound[tp]
        args = typing.get_args(tp)
        if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
            return functools.reduce(operator.or_, [fill(a) for a in args])
        return tp

    return {name: fill(tp) for name, tp in hints.items()}


def client_settings_table(cls: type) -> str:
    """The settings a core client takes, from ``SETTINGS`` and its signature's other objects."""
    import inspect

    settings = _settings()
    rows = [
        (
            s.name,
            _code(type_text(s.type)),
            _default_text(s),
            _cell(s.doc) + _aliases_text(s, "client"),
        )
        for s in settings.SETTINGS
        if "client" in s.surfaces
    ]
    hints = runtime_hints(cls)
    for name in inspect.signature(cls).parameters:
        if name not in settings.SETTINGS_BY_NAME:
            doc = _INJECTED.get(name, "")
            rows.append((name, _code(type_text(hints[name])), "`None`", doc))
    return _listing(rows)


_INJECTED = {
    "http_client": "Your own httpx client (its transport, proxies, TLS): the client then leaves "
    "the connection pool to you. Shared by copies, left behind by pickles.",
    "http_async_client": "Your own `httpx.AsyncClient` for the async methods.",
    "rate_limiter": "A `RateLimiter` shared with other clients; it replaces the pace set by "
    "`requests_per_minute` and `tokens_per_minute`.",
}


def adapter_settings_table(cls: Any, surface: str) -> str:
    """An adapter's pydantic fields: the settings (from ``SETTINGS``) and the framework's own."""
    settings = _settings()
    # Built, never used (no request, no connection): what the defaults come to.
    built = cls(api_key="sk-docs", base_url="http://127.0.0.1:9/v1")
    rows = []
    for name, info in cls.model_fields.items():
        setting = settings.SETTINGS_BY_NAME.get(name)
        if setting is not None and surface in setting.surfaces:
            rows.append(
                (
                    name,
                    _code(type_text(info.annotation)),
                    _default_text(setting),
                    _cell(setting.doc) + _aliases_text(setting, surface),
                )
            )
            continue
        if info.exclude and name not in _INJECTED:
            continue
        default: Any = info.default
        shown = _code(repr(default))
        if info.default_factory is not None or getattr(built, name, default) != default:
            # The adapter sets it from the other settings (LlamaIndex's embed_batch_size).
            shown = f"from the other settings (`{getattr(built, name)!r}` with their defaults)"
        meaning = _INJECTED.get(name) or info.description or ""
        rows.append((name, _code(type_text(info.annotation)), shown, _cell(meaning)))
    return _listing(rows)


# -- docstring prose ------------------------------------------------------------------------

_LITERAL = re.compile(
    r"^(?P<indent>[ ]*)(?P<lead>\S.*?)::\n\n(?P<block>(?:(?P=indent)[ ]+.*\n|\n)+)", re.M
)


def _fence_literals(text: str) -> str:
    """reST ``Lead::`` plus an indented block becomes ``Lead:`` plus a fenced code block."""

    def fence(match: re.Match[str]) -> str:
        indent = match["indent"]
        block = textwrap.dedent(match["block"]).strip("\n")
        language = "console" if block.startswith("$") else "python"
        if re.match(r"^\s*\d+ ", block) or "──" in block or "+--" in block:
            language = "text"
        body = textwrap.indent(f"```{language}\n{block}\n```", indent)
        return f"{indent}{match['lead']}:\n\n{body}\n\n"

    return _LITERAL.sub(fence, text + "\n").rstrip("\n")


def _entries_as_list(lines: list[str]) -> list[str]:
    """``name: text`` entries (names may be a list over lines, text may go on indented)."""
    items: list[list[str]] = []  # [names, text]
    pending = ""
    for line in lines:
        if line.startswith(" ") and items and not pending:
            items[-1][1] += " " + line.strip()
            continue
        head = pending + " " + line.strip() if pending else line.strip()
        match = re.match(r"^([\w]+(?:,\s*[\w]+)*):(?:\s+(.*))?$", head)
        if match is None:
            if head.endswith(","):
                pending = head
                continue
            return lines  # not entries: leave the paragraph as it is
        pending = ""
        items.append([match[1], match[2] or ""])
    return [
        "- " + ", ".join(f"`{n.strip()}`" for n in names.split(",")) + f": {text.strip()}"
        for names, text in items
    ]


def _key_init_args_as_lists(text: str) -> str:
    """LangChain-style "Key init args" sections as a bold title and a list of their entries.

    Google style knows no such section: griffe shows it as a paragraph (or an admonition
    whose entries run together). The entries become list items; what follows them in the
    section stays a paragraph.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not re.match(r"^Key init args\b.*:$", line):
            out.append(line)
            i += 1
            continue
        block: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            block.append(lines[i])
            i += 1
        paragraphs = "\n".join(textwrap.dedent("\n".join(block)).split("\n")).strip("\n")
        out += ["", f"**{line.rstrip(':')}**", ""]
        for n, paragraph in enumerate(paragraphs.split("\n\n")):
            para = paragraph.split("\n")
            out += (_entries_as_list(para) if n == 0 else para) + [""]
    return "\n".join(out)


def _link_public_names(text: str, targets: dict[str, str], own: str) -> str:
    """````Name```` of a documented public name, outside code blocks, as a link to it."""
    chunks = re.split(r"(```.*?```)", text, flags=re.S)

    def link(match: re.Match[str]) -> str:
        name = match[1]
        target = targets.get(name)
        if target is None or target == own:
            return match[0]
        return f"[`{name}`][{target}]"

    for i in range(0, len(chunks), 2):
        chunks[i] = re.sub(r"(?<!\[)``?([A-Za-z_][\w]*)``?(?!\])", link, chunks[i])
    return "".join(chunks)


_DOCS_PAGE = re.compile(r'docs/(?P<page>[\w-]+)\.md(?P<section>, "(?P<title>[^"]+)")?')


def _link_docs_pages(text: str) -> str:
    """``docs/page.md`` (and ``docs/page.md, "Section"``) as a link to that page of the site.

    Docstrings render on the reference pages, in ``docs/reference/``; MkDocs checks the
    link and turns it into the page's URL.
    """

    def link(match: re.Match[str]) -> str:
        url = f"../{match['page']}.md"
        if match["title"]:
            url += "#" + re.sub(r"[^\w]+", "-", match["title"].lower()).strip("-")
        return f"[{match[0]}]({url})"

    chunks = re.split(r"(```.*?```)", text, flags=re.S)
    for i in range(0, len(chunks), 2):
        chunks[i] = re.sub(r"``(docs/[\w-]+\.md)``", r"\1", chunks[i])
        chunks[i] = _DOCS_PAGE.sub(link, chunks[i])
    return "".join(chunks)


def _append(obj: griffe.Object, markdown: str) -> None:
    if obj.docstring is None:
        obj.docstring = griffe.Docstring(markdown, parent=obj)
    else:
        obj.docstring.value = obj.docstring.value.rstrip() + "\n\n" + markdown


class ReferenceExtension(griffe.Extension):
    """Fills in the reference from the code once the package is loaded (see the module doc)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        package = importlib.import_module(PACKAGE)
        targets = public_names()
        for name in CLIENTS:
            cls = pkg[name]
            cls = cls.final_target if isinstance(cls, griffe.Alias) else cls
            _append(
                cls,
                "**Settings** (keyword-only)\n\n" + client_settings_table(getattr(package, name)),
            )
            if isinstance(cls, griffe.Class):
                self._values_in_signature(cls, getattr(package, name))
        for path, surface in ADAPTERS.items():
            module_name, cls_name = path.rsplit(".", 1)
            try:
                runtime = getattr(importlib.import_module(f"{PACKAGE}.{module_name}"), cls_name)
            except ImportError:  # the framework is not installed: the page says so
                continue
            table = adapter_settings_table(runtime, surface)
            _append(
                pkg[path], "**Settings** (keyword arguments, also the model's fields)\n\n" + table
            )
        for obj in _walk(pkg):
            if isinstance(obj, griffe.Class):
                _drop_private_bases(obj)
            if isinstance(obj, griffe.Function):
                _constants_as_values(obj)
            if isinstance(obj, griffe.Attribute) and "instance-attribute" in obj.labels:
                obj.value = None  # computed in __init__ (``values["model"]``): noise
            if obj.docstring is not None:
                # reST roles (:class:`Name`) as the plain code spans that get linked below.
                text = re.sub(
                    r":(?:class|func|meth|attr|exc|mod):`~?([\w.]+)`",
                    r"``\1``",
                    obj.docstring.value,
                )
                text = _fence_literals(text)
                text = _key_init_args_as_lists(text)
                text = _link_public_names(text, targets, obj.path)
                obj.docstring.value = _link_docs_pages(text)

    @staticmethod
    def _values_in_signature(cls: griffe.Class, runtime: type) -> None:
        """The client's own copy of ``__init__`` (it may be a shared base's), with values."""
        import copy

        settings = _settings()
        init = cls.all_members.get("__init__")
        target = init.final_target if isinstance(init, griffe.Alias) else init
        if not isinstance(target, griffe.Function):
            return
        own = copy.copy(target)
        own.parameters = griffe.Parameters(*(copy.copy(p) for p in target.parameters))
        cls.set_member("__init__", own)
        hints = runtime_hints(runtime)
        for param in own.parameters:
            setting = settings.SETTINGS_BY_NAME.get(param.name)
            if setting is None:
                if param.name in hints:  # the objects a caller passes in: their real types
                    param.annotation = type_text(hints[param.name])
                continue
            if setting.default is settings.FROM_MODEL:
                param.annotation = type_text(setting.type)
                param.default = MODEL_DEFAULT
            else:
                param.default = repr(setting.signature_default)


def _constants_as_values(func: griffe.Function) -> None:
    """A default that names a constant (``DEFAULT_BATCH_SIZE``) shown as its value (``128``)."""
    for param in func.parameters:
        default = param.default
        path = getattr(default, "canonical_path", None)
        if not isinstance(default, griffe.ExprName) or not str(default).isupper() or not path:
            continue
        module_name, _, name = str(path).rpartition(".")
        try:
            value = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(value, str | int | float | bool | type(None)):
            param.default = repr(value)


def _drop_private_bases(cls: griffe.Class) -> None:
    """Drop private bases, keeping what the class inherits from them as its own members."""
    private = [base for base in cls.bases if _is_private(base)]
    if not private:
        return
    for name, member in cls.inherited_members.items():
        if _is_private(member.target_path.rsplit(".", 1)[0]):
            cls.set_member(name, member)
    cls.bases = [base for base in cls.bases if base not in private]


def _is_private(base: Any) -> bool:
    path = getattr(base, "canonical_path", None) or str(base)
    return any(part.startswith("_") for part in str(path).split("."))


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Alias):
            continue
        yield from _walk(member)


def public_names() -> dict[str, str]:
    """Every public name of the package's public modules -> the path it is documented under."""
    names: dict[str, str] = {}
    for module_name in PUBLIC_MODULES:
        full = f"{PACKAGE}.{module_name}" if module_name else PACKAGE
        try:
            module = importlib.import_module(full)
        except ImportError:
            continue
        for name in getattr(module, "__all__", ()):
            if name.startswith("__") or name.isupper():
                continue
            names.setdefault(name, f"{full}.{name}")
    return names
