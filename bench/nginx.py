"""Debian's nginx as the bench runs it: a whole configuration in a temporary folder, in the foreground.

Every nginx of the bench (the caching anchor, the pass-through app and proxy, thumbor's front, the
replicas' load balancer) shares `HEAD`: its own pid, log and temporary paths under the run's folder,
no access log. What each one serves is the `http` block's rest, given to `run_nginx`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from .procs import ManagedProcess, find_tool

HEAD: Final = """\
worker_processes auto;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
"""

# Long-lived client connections, as wrk opens them: what a server under benchmark load is tuned for.
KEEPALIVE: Final = """\
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
"""


def render(http: str, tmp: Path, **values: object) -> str:
    """The whole nginx.conf: `HEAD`, then `http` (the rest of the http block, a `str.format` template
    like `HEAD`, so literal braces are doubled), then the block's end."""
    # As root the workers would drop to `nobody`, which cannot enter the 0700 temporary directory.
    user = "user root;" if os.geteuid() == 0 else ""
    return (HEAD + http + "}}\n").format(user=user, tmp=tmp, **values)


@contextmanager
def run_nginx(name: str, tmp: Path, http: str, health_url: str, **values: object) -> Iterator[ManagedProcess]:
    """nginx with `render(http, tmp, **values)` as its configuration, its files in `tmp` (made here),
    once `health_url` answers; stopped (master and workers) on exit."""
    nginx = find_tool("nginx")
    if nginx is None:
        raise FileNotFoundError("nginx is not installed")
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(render(http, tmp, **values))
    argv = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf), "-g", "daemon off;"]
    with ManagedProcess(name, argv, tmp / "stdout.log") as proc:
        proc.wait_for_http(health_url)
        yield proc
