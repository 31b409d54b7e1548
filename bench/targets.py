"""A started target (`Target`) and imgproxy as every part of the bench starts it.

Each part's other targets live in its package (`bench.cache.anchors`, `bench.passthrough.targets`,
`bench.transforms.thumbor`). Every target runs on a free loopback port and is stopped when its
block exits.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devtools.azurite import ROOT, free_port

from .baseline import Code, verify
from .dataset import CONTAINER
from .procs import ManagedProcess

CONFIG: Final = ROOT / "config.toml"
EXTRA_ENV_VAR: Final = "IMGPROXY_BENCH_EXTRA_ENV"


@dataclass(slots=True)
class Target:
    name: str
    base: str  # http://127.0.0.1:<port>
    process: ManagedProcess
    notes: list[str] = field(default_factory=list)
    separate_caches: int = 1  # processes that each keep their own cache (imgproxy workers)
    imports: str = ""  # imgproxy.__file__ checked before the start (BENCH_BASELINE), else ""


def extra_imgproxy_env() -> dict[str, str]:
    """IMGPROXY_BENCH_EXTRA_ENV="IMGPROXY_SERVER_WORKERS=2 KEY=VALUE" -> dict (for variants)."""
    extra: dict[str, str] = {}
    for item in shlex.split(os.environ.get(EXTRA_ENV_VAR, "")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{EXTRA_ENV_VAR}: {item!r} is not KEY=VALUE")
        extra[key] = value
    return extra


def imgproxy_env(
    connection_string: str, port: int, overrides: Mapping[str, str] | None = None, code: Code | None = None
) -> dict[str, str]:
    """The bench's settings, then `overrides` (a workload's), then IMGPROXY_BENCH_EXTRA_ENV; with
    `code` (BENCH_BASELINE), `PYTHONPATH` = that tree."""
    return {
        **os.environ,
        **(code.env() if code else {}),
        "IMGPROXY_SERVER_PORT": str(port),
        "IMGPROXY_ORIGIN_CONNECTION_STRING": connection_string,
        "IMGPROXY_ORIGIN_CONTAINER": CONTAINER,
        "IMGPROXY_SERVER_DRAIN_S": "0",
        "IMGPROXY_CACHE_MAX_ITEMS": "5000",
        "IMGPROXY_CACHE_MAX_BYTES": str(512 * 1024 * 1024),
        **(overrides or {}),
        **extra_imgproxy_env(),
    }


def code_check(code: Code | None, env: Mapping[str, str], workdir: Path) -> tuple[str, list[str]]:
    """With `code`: check that `env` and `workdir` import its imgproxy; that `__file__` and a note
    saying which revision runs."""
    if code is None:
        return "", []
    imported = verify(code, env, workdir)
    return imported, [f"revision {code.revision.short}, imgproxy imported from {imported}"]


@contextmanager
def run_imgproxy(
    connection_string: str,
    workdir: Path,
    name: str = "imgproxy",
    overrides: Mapping[str, str] | None = None,
    code: Code | None = None,
) -> Iterator[Target]:
    """`python -m imgproxy --config config.toml`, env overrides; cwd is `workdir` (disk tier, if on).

    `code` (BENCH_BASELINE): import that tree and read its `config.toml` (checked before the start)."""
    port = free_port()
    env = imgproxy_env(connection_string, port, overrides, code)
    workers = int(env.get("IMGPROXY_SERVER_WORKERS", "1"))
    imported, revision = code_check(code, env, workdir)
    argv = [sys.executable, "-m", "imgproxy", "--config", str(code.config if code else CONFIG)]
    with ManagedProcess(name, argv, workdir / f"{name}.log", env=env, cwd=workdir) as proc:
        proc.wait_for_output("serving on", count=workers, timeout=60)
        notes = [f"{workers} process(es), uvloop", *revision]
        if overrides:
            notes.append("workload env: " + " ".join(f"{k}={v}" for k, v in overrides.items()))
        if extra := extra_imgproxy_env():
            notes.append("extra env: " + " ".join(f"{k}={v}" for k, v in extra.items()))
        yield Target(name, f"http://127.0.0.1:{port}", proc, notes, workers, imported)


def new_workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="imgproxy-bench-")
