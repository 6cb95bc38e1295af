"""Release check: build, check and install the wheel as a user would, then run what the README shows.

Run by ``make release-check`` (and CI) from the repository root with the dev environment's
Python (it needs ``build`` and ``twine``)::

    .venv/bin/python scripts/release_check.py [--keep]

Steps, each timed and each fatal on failure:

1. ``python -m build`` the sdist and the wheel into a temporary directory.
2. ``twine check --strict`` both.
3. The wheel's contents: the BGE vocabulary and ``py.typed`` are in, nothing from ``tests/``
   or ``benchmarks/`` is, the license is in its metadata, and its version is
   ``aiml_bge_integrations.__version__``.
4. A fresh virtual environment (in the temporary directory) with the wheel installed, not
   editable, with only the ``[all]`` extra.
5. ``aiml-bge demo`` from that environment, with no API key (so against the local server it
   starts itself) and nothing of this checkout on the path.
6. The README's LangChain and LlamaIndex quick starts, taken from README.md by their
   ``<!-- quickstart: NAME -->`` markers and run unchanged in that environment against a local
   server this script starts there, so the README and this check cannot drift apart.

Nothing is sent anywhere but 127.0.0.1 (the packages come from pip's configured index; pip may
use its cache).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aiml_bge_integrations"
QUICKSTARTS = ("langchain", "llama-index")
MARKER = "<!-- quickstart: {name} -->"

# Run inside the fresh environment: start the local server, point the environment at it, then
# run the quick start exactly as written in the README.
_RUNNER = """\
import os, runpy, sys
from aiml_bge_integrations.server import LocalServer

with LocalServer() as server:
    os.environ["AIMLAPI_BASE_URL"] = server.base_url
    os.environ["AIMLAPI_API_KEY"] = server.api_key
    runpy.run_path(sys.argv[1], run_name="__main__")
    requests = server.stats["requests"]
if not requests:
    sys.exit("the quick start sent no request to the local server")
print(f"[{requests} request(s) to the local server]")
"""


class CheckFailed(Exception):
    """One step of the release check failed."""


timings: list[tuple[str, float]] = []


@contextmanager
def step(name: str) -> Iterator[None]:
    """Print and time one step."""
    print(f"==> {name}", flush=True)
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    timings.append((name, elapsed))
    print(f"    ok ({elapsed:.1f} s)", flush=True)


def run(args: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its output is returned, and shown in full when it fails."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckFailed(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


def source_version() -> str:
    """``__version__`` as written in the package's ``__init__.py``."""
    text = (ROOT / "src" / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise CheckFailed("no __version__ line in __init__.py")
    return match.group(1)


def quickstart(readme: str, name: str) -> str:
    """The first ``python`` code block after the quick start's marker in the README."""
    marker = MARKER.format(name=name)
    at = readme.find(marker)
    if at < 0:
        raise CheckFailed(f"README.md has no {marker!r} marker")
    block = re.compile(r"```python\n(.*?)```", re.DOTALL).search(readme, at)
    if block is None:
        raise CheckFailed(f"no python code block after {marker!r} in README.md")
    return block.group(1)


def check_wheel(wheel: Path, version: str) -> None:
    """The wheel holds what users run and nothing of the tests or benchmarks."""
    names = zipfile.ZipFile(wheel).namelist()
    for required in (f"{PACKAGE}/bge_vocab.txt", f"{PACKAGE}/py.typed", f"{PACKAGE}/__init__.py"):
        if required not in names:
            raise CheckFailed(f"{wheel.name} lacks {required}")
    stray = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "notebooks", "docs")]
    stray += [n for n in names if "/tests/" in n or "/benchmarks/" in n or "conftest" in n]
    if stray:
        raise CheckFailed(f"{wheel.name} holds files that are not the package: {sorted(stray)}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        raise CheckFailed(f"{wheel.name} carries no LICENSE")
    if f"-{version}-" not in wheel.name:
        raise CheckFailed(f"{wheel.name} is not version {version} (__version__)")


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user who has the fresh venv active, no key and nothing else set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIMLAPI_", "PYTHON", "VIRTUAL_ENV", "CONDA"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["NO_COLOR"] = "1"
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Run every step; 0 when all pass."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="aiml-bge-release-"))
    dist, venv, scratch = work / "dist", work / "venv", work / "run"
    scratch.mkdir()
    started = time.perf_counter()
    try:
        version = source_version()
        with step(f"build sdist and wheel (version {version})"):
            run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=ROOT)
            wheels = sorted(dist.glob("*.whl"))
            sdists = sorted(dist.glob("*.tar.gz"))
            if len(wheels) != 1 or len(sdists) != 1:
                raise CheckFailed(f"expected one wheel and one sdist, got {os.listdir(dist)}")
            wheel = wheels[0]
        with step("twine check --strict"):
            run([sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists], cwd=ROOT)
        with step(f"wheel contents ({wheel.name})"):
            check_wheel(wheel, version)
        with step("fresh virtual environment with the wheel and only [all]"):
            run([sys.executable, "-m", "venv", venv], cwd=scratch)
            python = venv / "bin" / "python"
            env = clean_env(venv)
            run([python, "-m", "pip", "install", "--quiet", f"{wheel}[all]"], cwd=scratch, env=env)
            where = run(
                [python, "-c", f"import {PACKAGE} as p; print(p.__version__, p.__file__)"],
                cwd=scratch,
                env=env,
            ).split()
            if where[0] != version or not where[1].startswith(str(venv)):
                raise CheckFailed(f"the fresh venv imports {where}, not version {version} from it")
        with step("aiml-bge demo (no API key: the local server)"):
            out = run([venv / "bin" / "aiml-bge", "demo"], cwd=scratch, env=env)
            if "LOCAL STAND-IN" not in out or "demo finished" not in out:
                raise CheckFailed(f"the demo did not run against the local server:\n{out}")
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        runner = scratch / "run_quickstart.py"
        runner.write_text(_RUNNER, encoding="utf-8")
        for name in QUICKSTARTS:
            with step(f"README quick start: {name}"):
                script = scratch / f"quickstart_{name.replace('-', '_')}.py"
                script.write_text(quickstart(readme, name), encoding="utf-8")
                out = run([python, runner, script], cwd=scratch, env=env)
                print("    " + out.strip().replace("\n", "\n    "))
    except CheckFailed as err:
        print(f"release check FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"release check passed in {time.perf_counter() - started:.1f} s:")
    for name, seconds in timings:
        print(f"  {seconds:7.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
