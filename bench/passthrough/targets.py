"""The pass-through targets: the app, and imgproxy, nginx and a plain aiohttp route in front of it.

The "app" is nginx serving two static files (1 KiB and 1 MiB). In front of it, in turn: imgproxy
(`upstream.url`, `server.workers` = cores), nginx `proxy_pass` with a keep-alive upstream pool,
and the straightforward `ClientSession` pass-through of `bench.passthrough.session_pass` (same workers);
`direct` is the static nginx itself. Each gets `wrk -c<connections>` for throughput and `wrk -c1`
(one request at a time) for the latency a hop adds over `direct`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from devtools.azurite import ROOT, free_port

from .. import nginx
from ..baseline import Code
from ..procs import ManagedProcess
from ..targets import CONFIG, Target, code_check, imgproxy_env

PASS_FILES: Final = {"pass-1k": ("1k.bin", 1024), "pass-1m": ("1m.bin", 1024 * 1024)}
PASS_TARGETS: Final = ("imgproxy", "nginx", "session", "direct")

STATIC_CONF: Final = (
    nginx.KEEPALIVE
    + """\
    server {{
        listen 127.0.0.1:{port};
        location = /__health {{ return 200 "ok\\n"; }}
        location / {{ root {root}; }}
    }}
"""
)
PROXY_CONF: Final = (
    nginx.KEEPALIVE
    + """\
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /__health {{ return 200 "ok\\n"; }}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""
)


def write_files(root: Path) -> None:
    """The static files the app serves (fixed pseudo-random bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, size in PASS_FILES.values():
        (root / name).write_bytes(os.urandom(size))


@contextmanager
def _nginx(name: str, http: str, workdir: Path, **values: object) -> Iterator[Target]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with nginx.run_nginx(name, workdir / name, http, base + "/__health", port=port, **values) as proc:
        yield Target(name, base, proc, [f"nginx, worker_processes auto ({os.cpu_count()})"])


@contextmanager
def run_static(workdir: Path) -> Iterator[Target]:
    """The app: nginx serving `workdir/static` (named `direct` in the report)."""
    root = workdir / "static"
    write_files(root)
    with _nginx("direct", STATIC_CONF, workdir, root=root) as target:
        yield target


@contextmanager
def run_nginx_proxy(upstream: Target, workdir: Path) -> Iterator[Target]:
    """nginx `proxy_pass` to the app, HTTP/1.1 keep-alive pool of 64 (proxy_buffering on: its default)."""
    port = upstream.base.rsplit(":", 1)[1]
    with _nginx("nginx", PROXY_CONF, workdir, upstream_port=port) as target:
        target.notes.append("proxy_pass, keepalive 64, proxy_buffering on (default)")
        yield target


def pass_workers() -> int:
    return os.cpu_count() or 1


@contextmanager
def run_imgproxy_pass(
    connection_string: str,
    upstream: Target,
    workdir: Path,
    name: str = "imgproxy",
    code: Code | None = None,
) -> Iterator[Target]:
    """imgproxy with `upstream.url` = the app and `server.workers` = cores (`code`: that tree's,
    for BENCH_BASELINE, as in `targets.run_imgproxy`)."""
    port = free_port()
    workers = pass_workers()
    env = {
        **imgproxy_env(connection_string, port, code=code),
        "IMGPROXY_UPSTREAM_URL": upstream.base,
        "IMGPROXY_SERVER_WORKERS": str(workers),
    }
    imported, revision = code_check(code, env, workdir)
    argv = [sys.executable, "-m", "imgproxy", "--config", str(code.config if code else CONFIG)]
    log_path = workdir / f"{name}-pass.log"
    with ManagedProcess(f"{name}-pass", argv, log_path, env=env, cwd=workdir) as proc:
        proc.wait_for_output("serving on", count=workers, timeout=60)
        notes = [f"upstream.url, {workers} worker(s), uvloop", *revision]
        yield Target(name, f"http://127.0.0.1:{port}", proc, notes, workers, imported)


@contextmanager
def run_session_pass(upstream: Target, workdir: Path) -> Iterator[Target]:
    """The straightforward aiohttp `ClientSession` pass-through (`bench.passthrough.session_pass`)."""
    port = free_port()
    workers = pass_workers()
    argv = [
        sys.executable,
        "-m",
        "bench.passthrough.session_pass",
        "--upstream",
        upstream.base,
        "--port",
        str(port),
    ]
    argv += ["--workers", str(workers)]
    with ManagedProcess("session", argv, workdir / "session-pass.log", cwd=ROOT) as proc:
        proc.wait_for_output("serving on", count=workers, timeout=60)
        notes = [f"aiohttp route + ClientSession, {workers} worker(s), uvloop"]
        yield Target("session", f"http://127.0.0.1:{port}", proc, notes)
