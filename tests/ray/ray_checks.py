"""Checks of what the Ray processes do: sockets on loopback only, and where a string is stored.

Kept out of conftest.py so that test modules can import them by a name no other test
directory uses (``conftest`` is taken by every directory).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any


def ray_processes() -> list[Any]:
    """This process and every process it started (the Ray node's processes and workers)."""
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def non_loopback_sockets() -> list[str]:
    """Every inet socket of the Ray processes whose local or remote address is not loopback."""
    import psutil

    pids = {p.pid: p for p in ray_processes()}
    bad = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids:
            continue
        for end in (conn.laddr, conn.raddr):
            if end and not _loopback(end.ip):
                bad.append(f"pid {conn.pid} {conn.status} {conn.laddr} -> {conn.raddr}")
    return bad


def assert_ray_on_loopback() -> None:
    """Fail unless Ray's processes listen and connect on loopback only."""
    listening = [
        c
        for c in __import__("psutil").net_connections(kind="inet")
        if c.pid in {p.pid for p in ray_processes()} and c.status == "LISTEN"
    ]
    assert listening, "found no listening socket of the Ray processes: the check sees nothing"
    bad = non_loopback_sockets()
    assert not bad, "Ray sockets off loopback:\n" + "\n".join(bad)


def _chunks_contain(path: Path, needle: bytes) -> bool:
    overlap = len(needle) - 1
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            if needle in tail + chunk:
                return True
            tail = chunk[-overlap:] if overlap else b""
    return False


def _mapped_by_ray(path: str) -> bool:
    # Shared libraries and Python files are code, not data Ray stores.
    return not (".so" in path or path.startswith(("/usr/", "/lib")) or "/site-packages/" in path)


def places_holding(needle: str, temp_dir: Path) -> list[str]:
    """Where ``needle`` is in what Ray stores: its session files, spilled objects, /dev/shm,
    and the object store's shared memory (read through the Ray processes' file mappings).
    """
    target = needle.encode("utf-8")
    found: list[str] = []
    files = [p for root in (temp_dir, Path("/dev/shm")) for p in root.rglob("*")]
    for p in files:
        try:
            if p.is_file() and not p.is_symlink() and _chunks_contain(p, target):
                found.append(str(p))
        except OSError:
            continue
    for proc in ray_processes():
        mapped = Path(f"/proc/{proc.pid}/map_files")
        try:
            entries = list(mapped.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                where = os.readlink(entry)
                if _mapped_by_ray(where) and _chunks_contain(entry, target):
                    found.append(f"pid {proc.pid} mapping of {where}")
            except OSError:
                continue
    return found
