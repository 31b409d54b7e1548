"""The four caches under test, each started on a free loopback port with the same URL layout.

`/images/<blob path>` everywhere; each yields a `Target` and is stopped when its block exits.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devtools.azurite import ACCOUNT, ROOT, free_port

from . import nginx
from .baseline import Code, verify
from .dataset import CONTAINER
from .procs import ManagedProcess, find_tool

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
    argv = [sys.executable, "-m", "bench.bare", "--origin", container_url, "--paths", str(paths)]
    argv += ["--port", str(port)]
    with ManagedProcess("bare", argv, workdir / "bare.log", cwd=ROOT) as proc:
        proc.wait_for_output("serving on", timeout=120)
        yield Target("bare", f"http://127.0.0.1:{port}", proc, ["1 process, uvloop, dict lookup"])


def new_workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="imgproxy-bench-")
