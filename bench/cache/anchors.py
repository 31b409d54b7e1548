"""The cache part's anchors: nginx `proxy_cache`, Varnish and the bare aiohttp handler.

Each serves `/images/<blob path>` from the bench's Azurite container, as imgproxy does, on a free
loopback port, and is stopped when its block exits.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from devtools.azurite import ACCOUNT, ROOT, free_port

from .. import nginx
from ..dataset import CONTAINER
from ..procs import ManagedProcess, find_tool
from ..targets import Target

NGINX_CONF: Final = (
    nginx.KEEPALIVE
    + """\
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=img:64m max_size=4g inactive=1h use_temp_path=off;
    upstream azurite {{
        server {origin_host}:{origin_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /__health {{ return 200 "ok\\n"; }}
        location /images/ {{
            proxy_pass http://azurite/{account}/{container}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {origin_host}:{origin_port};
            proxy_buffering on;
            proxy_cache img;
            proxy_cache_lock on;
            proxy_cache_valid 200 206 1h;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
"""
)


@contextmanager
def run_nginx(origin_host: str, origin_port: int, workdir: Path) -> Iterator[Target]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values = {
        "origin_host": origin_host,
        "origin_port": origin_port,
        "account": ACCOUNT,
        "container": CONTAINER,
    }
    health = base + "/__health"
    with nginx.run_nginx("nginx", workdir / "nginx", NGINX_CONF, health, port=port, **values) as proc:
        workers = os.cpu_count() or 1
        notes = [f"worker_processes auto ({workers}), proxy_cache on disk (page cache), sendfile"]
        yield Target("nginx", base, proc, notes)


VCL: Final = """\
vcl 4.1;

backend azurite {{
    .host = "{origin_host}";
    .port = "{origin_port}";
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 30s;
}}

sub vcl_recv {{
    if (req.url == "/__health") {{
        return (synth(200, "OK"));
    }}
    if (req.url !~ "^/images/") {{
        return (synth(404, "Not Found"));
    }}
    set req.url = regsub(req.url, "^/images/(.*)$", "/{account}/{container}/\\1");
    set req.http.Host = "{origin_host}:{origin_port}";
    unset req.http.Cookie;
    if (req.method != "GET" && req.method != "HEAD") {{
        return (pass);
    }}
    return (hash);
}}

sub vcl_backend_response {{
    unset beresp.http.Set-Cookie;
    if (beresp.status == 200) {{
        set beresp.ttl = 1h;
        return (deliver);
    }}
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache = "HIT";
    }} else {{
        set resp.http.X-Cache = "MISS";
    }}
}}
"""


@contextmanager
def run_varnish(origin_host: str, origin_port: int, workdir: Path) -> Iterator[Target]:
    varnishd = find_tool("varnishd")
    if varnishd is None:
        raise FileNotFoundError("varnishd is not installed")
    port = free_port()
    tmp = workdir / "varnish"
    tmp.mkdir()
    vcl = tmp / "bench.vcl"
    vcl.write_text(
        VCL.format(origin_host=origin_host, origin_port=origin_port, account=ACCOUNT, container=CONTAINER)
    )
    argv = [
        varnishd,
        "-F",
        "-a",
        f"127.0.0.1:{port}",
        "-f",
        str(vcl),
        "-s",
        "malloc,1G",
        "-n",
        str(tmp / "n"),
    ]
    argv += ["-T", "none"]  # no management CLI listener: nothing here uses varnishadm
    if os.geteuid() == 0:
        # The default `-j unix` jail runs the VCL compiler and the child as `vcache`, which cannot
        # read files in this 0700 temporary directory; `-j none` keeps everything as root.
        argv += ["-j", "none"]
    with ManagedProcess("varnish", argv, tmp / "varnishd.log") as proc:
        proc.wait_for_http(f"http://127.0.0.1:{port}/__health", timeout=60)
        notes = ["-s malloc,1G, default thread pools (2 x 100-5000 threads)"]
        yield Target("varnish", f"http://127.0.0.1:{port}", proc, notes)


@contextmanager
def run_bare(container_url: str, names: list[str], workdir: Path) -> Iterator[Target]:
    port = free_port()
    paths = workdir / "bare-paths.json"
    paths.write_text(json.dumps(names))
    argv = [sys.executable, "-m", "bench.cache.bare", "--origin", container_url, "--paths", str(paths)]
    argv += ["--port", str(port)]
    with ManagedProcess("bare", argv, workdir / "bare.log", cwd=ROOT) as proc:
        proc.wait_for_output("serving on", timeout=120)
        yield Target("bare", f"http://127.0.0.1:{port}", proc, ["1 process, uvloop, dict lookup"])
