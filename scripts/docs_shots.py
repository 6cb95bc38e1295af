"""Screenshots of the API reference pages, taken with headless Chromium from a fresh build.

Run by ``make docs-shots``::

    .venv/bin/python scripts/docs_shots.py [--out docs-shots] [--pages reference/langchain,...]

Builds the site with ``mkdocs build --strict`` into a temporary directory, then opens each
page from disk (``file://``, no server, no port) in headless Chromium and writes
``OUT/<page>.png`` (1280 pixels wide). Chromium is the first of ``$CHROMIUM``,
``chromium``, ``chromium-browser``, ``chromium-headless-shell`` and ``google-chrome`` found
on ``PATH`` (on Debian or Ubuntu: ``apt-get install chromium-headless-shell``). Nothing is
fetched from the network: the site ships every asset it uses.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("reference/langchain", "reference/llama-index", "reference/ray", "reference/core")
"""The pages shot by default: both adapters, the Ray module, the core clients."""
BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium to use: ``$CHROMIUM``, else the first of ``BROWSERS`` on ``PATH``."""
    given = os.environ.get("CHROMIUM")
    if given:
        return shutil.which(given) or (given if Path(given).exists() else None)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def build_site(out: Path) -> None:
    """``mkdocs build --strict`` of this checkout into ``out``."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )


def shoot(chromium: str, page: Path, png: Path, height: int) -> None:
    """One screenshot of ``page`` (an HTML file) into ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="docs-shots-profile-") as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # root in a container has no user namespace for the sandbox
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--window-size=1280,{height}",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot of {page}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs-shots")
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page paths")
    parser.add_argument("--height", type=int, default=6000, help="window height in pixels")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(
            "docs-shots: no Chromium found (set CHROMIUM, or on Debian/Ubuntu: "
            "apt-get install chromium-headless-shell)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="docs-shots-site-") as site:
        build_site(Path(site))
        for name in args.pages.split(","):
            page = Path(site) / name.strip("/") / "index.html"
            png = args.out / (name.strip("/").replace("/", "-") + ".png")
            shoot(chromium, page, png, args.height)
            print(f"{png}  ({png.stat().st_size // 1024} KB, from {name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
