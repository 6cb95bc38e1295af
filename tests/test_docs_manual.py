"""The manual says what the code does: defaults in its tables, exit codes, pages, generated parts.

The pages are read as Markdown (no site build): every table with a ``setting`` or ``flag``
column and a ``default`` column must give each setting the default of its one definition
(``SETTINGS``); the command line's exit-code table must list exactly the codes the command
has (``aiml_bge_integrations.cli.EXIT_*``); the home page must link every page of the users'
navigation; the generated parts (the code's layout, the command's help) must cover what they
are generated from.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import pytest

from aiml_bge_integrations import cli
from aiml_bge_integrations._settings import FROM_MODEL, SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(line: str) -> list[str]:
    # Split a Markdown table row on pipes outside code spans and not escaped.
    cells, cell, in_code = [], "", False
    body = line.strip().strip("|")
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body) and body[i + 1] == "|":
            cell += "|"
            i += 2
            continue
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
        i += 1
    cells.append(cell.strip())
    return cells


def tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table outside code blocks, as rows of cells (the header row first)."""
    found: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*_FENCE.sub("", markdown).splitlines(), ""]:
        if line.lstrip().startswith("|"):
            if not re.match(r"^\s*\|[\s:|-]+\|\s*$", line):
                rows.append(_cells(line))
        elif rows:
            found.append(rows)
            rows = []
    return found


def agrees(cell: str, value: Any) -> bool:
    """Whether a table's default cell states ``value``."""
    text = cell.replace("`", "").strip().lower()
    if value is None:
        return bool(re.search(r"\bnone\b|not sent|\bno\b|\boff\b", text))
    if isinstance(value, bool):
        return (value and bool(re.search(r"\btrue\b|\bon\b", text))) or (
            not value and bool(re.search(r"\bfalse\b|\boff\b", text))
        )
    if isinstance(value, int | float):
        number = re.search(r"\d[\d,]*(?:\.\d+)?", text)
        return number is not None and math.isclose(float(number[0].replace(",", "")), value)
    return str(value).lower() in text


def default_rows(markdown: str) -> list[tuple[str, str]]:
    """(setting name, default cell) from every table with a setting/flag and a default column."""
    rows = []
    for table in tables(markdown):
        header = [h.lower() for h in table[0]]
        if "default" not in header:
            continue
        default_at = header.index("default")
        name_at = header.index("setting") if "setting" in header else None
        if name_at is None and header[0] != "flag":
            continue
        for row in table[1:]:
            if len(row) <= default_at:
                continue
            # The names in the setting column, and in the flag column (--max-concurrency).
            columns = {name_at if name_at is not None else 0, 0 if header[0] == "flag" else -1}
            names = []
            for at in sorted(c for c in columns if c >= 0):
                for found in re.findall(r"`([\w-]+)", row[at]):
                    name = found.lstrip("-").replace("-", "_")
                    if name not in names:
                        names.append(name)
            defaults = row[default_at].split(" / ")
            settings = [n for n in names if n in SETTINGS_BY_NAME]
            if len(defaults) == len(settings) > 1:
                rows += list(zip(settings, defaults, strict=True))
            else:
                rows += [(n, row[default_at]) for n in settings]
    return rows


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_defaults_in_tables_are_the_definitions(page: Path) -> None:
    wrong = []
    for name, cell in default_rows(page.read_text(encoding="utf-8")):
        setting = SETTINGS_BY_NAME[name]
        if setting.default is FROM_MODEL or setting.name == "api_key":
            continue
        if not agrees(cell, setting.default):
            wrong.append(f"{name}: the page says {cell!r}, the code {setting.default!r}")
    assert wrong == []


def test_a_wrong_default_is_caught() -> None:
    page = "| flag | setting | default |\n|---|---|---|\n| `--max-concurrency` | `max_concurrency` | 4 |\n"
    [(name, cell)] = default_rows(page)
    assert name == "max_concurrency" and not agrees(cell, SETTINGS_BY_NAME[name].default)
    assert agrees(
        "`$AIMLAPI_BASE_URL`, else `https://api.aimlapi.com/v1`", "https://api.aimlapi.com/v1"
    )
    assert agrees("60 s", 60.0) and agrees("not sent", None) and agrees("off", False)


def test_every_flag_of_a_setting_is_in_the_command_lines_table() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    named = {name for name, _ in default_rows(text)}
    flags = {s.name for s in SETTINGS_BY_NAME.values() if s.flag}
    assert flags - named == set()


def exit_codes() -> dict[int, str]:
    """The command's exit codes, from its module: ``EXIT_*`` -> the code."""
    return {getattr(cli, n): n for n in dir(cli) if n.startswith("EXIT_")}


def test_the_exit_code_table_is_the_commands() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1]
    [table, *_] = tables(section)
    assert table[0][0].lower() == "code"
    documented = {int(row[0]) for row in table[1:]}
    assert documented == set(exit_codes())


def test_the_home_page_links_every_users_page() -> None:
    yaml = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    guide = yaml.split("  - User guide:\n", 1)[1].split("\n  - ", 1)[0]
    pages = re.findall(r":\s*([\w/-]+\.md)\s*$", guide, flags=re.MULTILINE)
    assert len(pages) > 10
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    assert [p for p in pages if f"]({p})" not in home] == []


def test_the_layout_page_names_every_module() -> None:
    table = _hooks().layout_table()
    package = ROOT / "src" / "aiml_bge_integrations"
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        name = relative.removesuffix("__init__.py") or "__init__.py"
        assert f"| `{name}` |" in table, relative
    assert "<!-- code-layout -->" in (DOCS / "layout.md").read_text(encoding="utf-8")


def test_the_generated_help_has_every_flag() -> None:
    help_text = _hooks().cli_help("embed")
    embed = cli.build_parser()._subparsers._group_actions[0].choices["embed"]  # type: ignore[union-attr]
    for action in embed._actions:
        for option in action.option_strings:
            assert option in help_text, option
    assert "<!-- cli-help: embed -->" in (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")


def test_the_errors_page_draws_the_codes_tree_and_names_every_error() -> None:
    from aiml_bge_integrations import errors

    page = (DOCS / "errors.md").read_text(encoding="utf-8")
    assert "<!-- error-tree -->" in page
    tree = _hooks().error_tree()
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            if not issubclass(obj, Warning):  # warned, never raised: not in the tree
                assert name in tree, f"{name} is not in the tree drawn in errors.py"
            assert f"`{name}`" in page, f"{name} is not described on docs/errors.md"
