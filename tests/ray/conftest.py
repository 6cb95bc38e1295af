"""Fixtures of the Ray tests: one single-node Ray session for the run, on 127.0.0.1 only.

Each test module skips itself (``pytest.importorskip``) where Ray Data is not installed; this
file imports Ray only inside its fixtures.

Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when it is first imported: set to 0 it keeps
the node's address (and so every socket of its processes) on the loopback address. The
variables are set here, before any test module of this directory imports Ray.

The key reaches the workers the way docs/ray.md recommends on a cluster: it is in the
environment of the node's processes (the raylet inherits it from the process that starts
the node, and every worker inherits it from the raylet), and nothing else carries it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# No progress bars in the test output.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from ray_checks import assert_ray_on_loopback

from aiml_bge_integrations._ray_job import local_node_environment
from aiml_bge_integrations._settings import API_KEY_ENV
from aiml_bge_integrations.server import LocalServer

NUM_CPUS = 8
"""Logical CPUs of the test node (tokens, not cores: actors take a quarter each, read and
repartition tasks one each)."""


@pytest.fixture(autouse=True)
def _one_worker_for_ray(request: pytest.FixtureRequest) -> None:
    """Fail loudly when ``--dist loadgroup`` does not keep the Ray tests on one worker.

    pytest-xdist groups the tests of an ``xdist_group`` by a ``@group`` suffix of their node
    ids; with pytest 9.2 that suffix no longer takes (pytest-dev/pytest-xdist#1386), and each
    worker would start a Ray node of its own on the same two cores.
    """
    node = request.node
    grouped = node.get_closest_marker("xdist_group") is not None
    loadgroup = getattr(request.config.option, "loadgroup", False)
    if loadgroup and grouped and not node.nodeid.endswith("@ray"):
        pytest.fail(
            f"not grouped on one worker: pytest-xdist's loadgroup does not work with "
            f"pytest {pytest.__version__} (pytest-dev/pytest-xdist#1386); install the "
            "pytest that the test extra pins"
        )


@pytest.fixture(scope="session")
def ray_server() -> Iterator[LocalServer]:
    """A local server for the Ray tests, its key in the environment the Ray node inherits."""
    with LocalServer() as server:
        yield server


@pytest.fixture(scope="session")
def ray_temp_root() -> Iterator[Path]:
    """One short root for every Ray session of the test run, removed at its end.

    Short: Ray's unix socket paths must stay under 108 bytes.
    """
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(ray_server: LocalServer, ray_temp_root: Path) -> Iterator[dict[str, Any]]:
    """A single-node Ray session on 127.0.0.1, started with the server's key in its environment.

    Yields ``{"temp_dir": Path, "server": LocalServer}``; the session is shut down at the end
    of the test run. Started once: a node takes seconds to start on two cores.
    """
    import ray
    import ray.data

    assert ray_server.api_key
    # The key, and what keeps the node's own traffic on loopback (local_node_environment).
    node_env = {API_KEY_ENV: ray_server.api_key, **local_node_environment()}
    previous = {name: os.environ.get(name) for name in node_env}
    os.environ.update(node_env)
    temp_dir = ray_temp_root
    try:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=NUM_CPUS,
            log_to_driver=False,
            _temp_dir=str(temp_dir),
            configure_logging=False,
            # Small, so that the key test can read all of it.
            object_store_memory=100 * 1024 * 1024,
        )
    finally:
        # Only the node's processes keep them; the driver's tests run without the key
        # (tests/conftest.py) and without the proxy.
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        assert_ray_on_loopback()
        yield {"temp_dir": temp_dir, "server": ray_server}
    finally:
        ray.shutdown()
