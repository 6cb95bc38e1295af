"""The built API reference shows what the code has: every setting, every public name, clean signatures.

The site is built once (``mkdocs build --strict`` into a temporary directory, as ``make
docs-build`` does) and its reference pages are read as HTML: each class's settings, taken
from the code (``SETTINGS``, the adapters' pydantic fields), must appear in that class's
section of its page; every name in a public module's ``__all__`` must have an entry; no
signature may show a constant's name, ``EllipsisType`` or a private base.
"""

from __future__ import annotations

import html
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

from aiml_bge_integrations._settings import SETTINGS

# One worker builds the site once for every test here (pytest-xdist, --dist loadgroup).
pytestmark = pytest.mark.xdist_group("docs-site")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aiml_bge_integrations"

PAGES = {
    "": "core",
    "errors": "errors",
    "langchain": "langchain",
    "llama_index": "llama-index",
    "ray": "ray",
    "tokens": "tokens",
    "server": "server",
    "cli": "cli",
}
"""Each public module (``''``: the package) and the reference page that documents it."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def page(site: Path, name: str) -> str:
    return (site / "reference" / name / "index.html").read_text(encoding="utf-8")


def section(text: str, identifier: str) -> str:
    """The HTML of one documented object: from its anchor to the next object of its level."""
    start = text.index(f'id="{identifier}"')
    level = re.search(r"<h(\d)", text[start - 200 : start])
    heading = level.group(1) if level else "2"
    rest = text[start:]
    ends = [m.start() for m in re.finditer(rf'<h{heading} id="{PACKAGE}[\w.]*"', rest[1:])]
    return rest[: ends[0] + 1] if ends else rest


def listed_settings(fragment: str) -> list[str]:
    """The names in the section's settings list (``- **`name`** (type, default ...)``)."""
    return re.findall(r"<li><strong><code>(\w+)</code></strong> \(", fragment)


@pytest.mark.parametrize("cls", ["EmbeddingsClient", "AsyncEmbeddingsClient"])
def test_the_clients_settings_are_on_their_page(site: Path, cls: str) -> None:
    fragment = section(page(site, "core"), f"{PACKAGE}.{cls}")
    expected = [s.name for s in SETTINGS if "client" in s.surfaces]
    listed = listed_settings(fragment)
    assert listed[: len(expected)] == expected
    assert set(listed) - set(expected) == {"http_client", "rate_limiter"}


@pytest.mark.parametrize(
    ("module", "cls"),
    [("langchain", "AimlBgeEmbeddings"), ("llama_index", "AimlBgeEmbedding")],
)
def test_every_adapter_field_is_on_its_page(site: Path, module: str, cls: str) -> None:
    adapter = getattr(pytest.importorskip(f"{PACKAGE}.{module}"), cls)
    fragment = section(page(site, PAGES[module]), f"{PACKAGE}.{module}.{cls}")
    listed = listed_settings(fragment)
    surface = module
    for setting in SETTINGS:
        if surface in setting.surfaces:
            assert setting.name in listed, setting.name
    # The fields a caller may set: every one that pydantic would accept by name.
    for name, info in adapter.model_fields.items():
        if not info.exclude or name in {"api_key", "http_client", "http_async_client"}:
            assert name in listed, name
    # Each with its type and its default as a value, and its one line.
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment))
    assert "batch_size (int, default 128): Texts per request" in text
    assert "Also accepted as " + ("chunk_size" if module == "langchain" else "api_base") in text


def test_every_public_name_has_an_entry(site: Path) -> None:
    missing = []
    for module_name, page_name in PAGES.items():
        full = f"{PACKAGE}.{module_name}" if module_name else PACKAGE
        module = pytest.importorskip(full)
        text = page(site, page_name)
        for name in module.__all__:
            obj = getattr(module, name)
            home = full
            if module_name == "" and name in importlib.import_module(f"{PACKAGE}.errors").__all__:
                text, home = page(site, "errors"), f"{PACKAGE}.errors"
            if f'id="{home}.{name}"' not in text:
                missing.append(f"{full}.{name} ({type(obj).__name__})")
            text = page(site, page_name)
    assert missing == []


def test_signatures_show_values_and_public_bases_only(site: Path) -> None:
    for page_name in PAGES.values():
        text = html.unescape(re.sub(r"<[^>]+>", "", page(site, page_name)))
        assert "EllipsisType" not in text, page_name
        assert "= ..." not in text, page_name
        assert "Bases: _" not in text and "AdapterMixin" not in text, page_name
        assert "Usage::" not in text and "Example::" not in text, page_name
        for constant in ("DEFAULT_BATCH_SIZE", "DEFAULT_MAX_CONCURRENCY", "API_KEY_ENV"):
            assert f"= {constant}" not in text, (page_name, constant)
    core = html.unescape(re.sub(r"<[^>]+>", "", page(site, "core")))
    assert "batch_size: int = 128" in core
    assert "max_concurrency: int = 16" in core
    # What a client inherits from its private base is documented as its own.
    fragment = section(page(site, "core"), f"{PACKAGE}.EmbeddingsClient")
    assert f'id="{PACKAGE}.EmbeddingsClient.usage"' in fragment


def test_key_init_args_are_lists_and_doc_paths_are_links(site: Path) -> None:
    text = page(site, "langchain")
    assert re.search(r"<li><code>model</code>: Model name", text)
    assert re.search(r"<li><code>api_key</code>: API key", text)
    assert not re.search(r"(?<!href=\")docs/settings-notes\.md(?!</a>)", text)
    assert 'href="../../settings-notes/"' in text
    llama = page(site, "llama-index")
    assert re.search(r"<li><code>embed_batch_size</code>: ", llama)


def test_the_ray_module_is_in_the_reference(site: Path) -> None:
    text = page(site, "ray")
    for name in ("embed_dataset", "embed_parquet", "BgeEmbedder", "split_limits"):
        assert f'id="{PACKAGE}.ray.{name}"' in text, name
