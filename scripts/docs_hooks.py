"""MkDocs hooks (``hooks:`` in mkdocs.yml): pages whose content is read from the code.

- ``<!-- code-layout -->`` becomes a table of the package's modules (and subpackages), each
  with the first line of its docstring, read from ``src/`` with ``ast`` (nothing is
  imported). The table follows the code as modules are added, split or renamed.
- ``<!-- error-tree -->`` becomes the exception tree drawn in the docstring of
  ``errors.py`` (read with ``ast``), so the page and the code show one drawing.
- ``<!-- cli-help: COMMAND -->`` becomes the ``--help`` of ``aiml-bge COMMAND`` (``-`` for
  the command itself), from the parser the command runs, at a fixed width of 92 columns.

``tests/test_docs_manual.py`` checks them.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "src" / "aiml_bge_integrations"
MARKER = "<!-- code-layout -->"
CLI_HELP = re.compile(r"<!-- cli-help: (?P<command>[\w-]+) -->")
HELP_WIDTH = "92"


def module_summaries(package_dir: Path = PACKAGE_DIR) -> list[tuple[str, str]]:
    """(path under the package, first docstring line) for every module, packages as ``name/``."""
    rows: list[tuple[str, str]] = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if "__pycache__" in relative.parts:
            continue
        if path.name == "__init__.py":
            name = "__init__.py" if relative.parent == Path() else f"{relative.parent.as_posix()}/"
        else:
            name = relative.as_posix()
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        rows.append((name, docstring.strip().split("\n", 1)[0]))
    return sorted(rows)  # a package's "name/" sorts before its modules


def layout_table() -> str:
    """The Markdown table that replaces the marker."""
    lines = ["| module | what it is |", "|---|---|"]
    for name, summary in module_summaries():
        cell = summary.replace("|", "\\|")
        lines.append(f"| `{name}` | {cell} |")
    return "\n".join(lines) + "\n"


ERROR_TREE = "<!-- error-tree -->"


def error_tree(package_dir: Path = PACKAGE_DIR) -> str:
    """The first ``::`` block of ``errors.py``'s docstring (the tree), dedented."""
    import textwrap

    doc = ast.get_docstring(ast.parse((package_dir / "errors.py").read_text(encoding="utf-8")))
    _, _, rest = (doc or "").partition("::\n\n")
    block = []
    for line in rest.split("\n"):
        if line and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def cli_help(command: str) -> str:
    """``aiml-bge COMMAND --help`` as the parser prints it (``-``: ``aiml-bge --help``)."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from aiml_bge_integrations.cli import build_parser

    parser = build_parser()
    if command != "-":
        parser = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr,index]
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps at the terminal's width
    try:
        return parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Fill in the code-layout table and the command's help where a page asks for them."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, layout_table())
    if ERROR_TREE in markdown:
        markdown = markdown.replace(ERROR_TREE, "```text\n" + error_tree() + "```")
    return CLI_HELP.sub(lambda m: "```text\n" + cli_help(m["command"]).rstrip() + "\n```", markdown)
