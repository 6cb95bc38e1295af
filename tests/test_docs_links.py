"""Link rot in the README and the notebooks: every relative link points at a file of the repository.

The docs site's own links are checked by ``mkdocs build --strict`` (in ``make test``); the
README is read on GitHub and PyPI, outside MkDocs, so it gets this check. The README's quick
starts are run by ``make release-check``, which finds them by their markers: they are checked
here too, so that a README edit cannot silently drop them from the check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def relative_links(markdown: str) -> list[str]:
    """The targets of the Markdown links outside code blocks that are not URLs or anchors."""
    prose = _FENCE.sub("", markdown)
    return [
        target
        for target in _LINK.findall(prose)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def missing_targets(document: Path) -> list[str]:
    """Relative links in ``document`` whose file (anchor dropped) does not exist."""
    links = relative_links(document.read_text(encoding="utf-8"))
    return [
        link for link in links if not (document.parent / link.split("#", 1)[0]).resolve().exists()
    ]


def test_readme_relative_links_exist() -> None:
    links = relative_links(README.read_text(encoding="utf-8"))
    assert any(link.startswith("docs/") for link in links), "the README links into the docs"
    assert missing_targets(README) == []


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "here.md").write_text("x", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](here.md) [gone](docs/gone.md#part) [web](https://example.org) [top](#top)\n"
        "```\n[in code](not/checked.md)\n```\n",
        encoding="utf-8",
    )
    assert missing_targets(doc) == ["docs/gone.md#part"]


@pytest.mark.parametrize("name", ["langchain", "llama-index"])
def test_readme_quickstart_markers(name: str) -> None:
    text = README.read_text(encoding="utf-8")
    marker = f"<!-- quickstart: {name} -->"
    assert marker in text
    after = text[text.index(marker) + len(marker) :].lstrip("\n")
    assert after.startswith("```python\n"), f"a python code block must follow {marker}"


# -- the notebooks ------------------------------------------------------------------------------

NOTEBOOKS = ROOT / "notebooks"


def test_the_notebooks_readme_names_every_notebook_and_build_script() -> None:
    guide = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for path in [*NOTEBOOKS.glob("*.ipynb"), *NOTEBOOKS.glob("build_*.py")]:
        assert path.name in guide, path.name
    assert missing_targets(NOTEBOOKS / "README.md") == []
    assert "notebooks/README.md" in relative_links(README.read_text(encoding="utf-8"))


def test_the_notebooks_links_resolve() -> None:
    # A pointer to a README section that lives in docs/ was one that led nowhere.
    stale = 'the README, "Self-hosting BGE"'
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert stale not in markdown, notebook.name
        for link in relative_links(markdown):
            assert (NOTEBOOKS / link.split("#", 1)[0]).resolve().exists(), (notebook.name, link)
    for script in sorted(NOTEBOOKS.glob("build_*.py")):
        assert stale not in script.read_text(encoding="utf-8"), script.name
