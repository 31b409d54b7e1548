"""The thumbor anchor: thumbor from PyPI in a venv of its own, one process per core behind nginx.

thumbor's dependencies (its own Pillow, tornado, ...) must not reach our environment, so
`ensure_venv()` makes `.cache/bench/thumbor-venv` with `python -m venv` and installs the exact
versions of `bench/transforms/thumbor-requirements.txt` (thumbor 7.8.0 with Pillow 12.3.0, and
pillow-heif 1.9.0, whose plugin thumbor's Pillow engine imports to read HEIC), once; a venv whose
`pip freeze` differs is rebuilt.

`run_thumbor()` starts one nginx and `cores` single-process thumbors. nginx serves the source
files as a static server (thumbor's HTTP loader reads them from it, as from any web origin) and
balances the thumbors round-robin with keep-alive: one single-process thumbor per core, since
`--processes 2` under keep-alive load tends to leave a core idle (the kernel's accept spreads
connections, not requests). thumbor's defaults otherwise: the Pillow engine, no engine thread
pool, the file storage for sources (a per-run directory), `ALLOW_UNSAFE_URL` (the benchmark
uses `/unsafe/` URLs, as imgproxy runs with `allow_unsigned`). The result storage is off
for cold runs and thumbor's file result storage (storing unsafe URLs too) for warm runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devtools.azurite import ROOT, free_port
from devtools.processes import process_tree

from .. import nginx
from ..procs import ManagedProcess, find_tool

VENV: Final = ROOT / ".cache" / "bench" / "thumbor-venv"
REQUIREMENTS: Final = Path(__file__).resolve().parent / "thumbor-requirements.txt"
PIP_TIMEOUT_S: Final = 600
START_TIMEOUT_S: Final = 60


def _pinned() -> list[str]:
    lines = (line.strip() for line in REQUIREMENTS.read_text().splitlines())
    return sorted(line.lower() for line in lines if line and not line.startswith("#"))


def clean_env() -> dict[str, str]:
    """Our environment without PYTHONPATH: thumbor's interpreter must see none of our packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT")}


def _installed(python: Path) -> list[str]:
    # cwd: `python -m` puts the working directory on sys.path, and ours holds imgproxy.egg-info.
    done = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=VENV,
        env=clean_env(),
    )
    return sorted(line.strip().lower() for line in done.stdout.splitlines() if line.strip())


def ensure_venv() -> Path:
    """thumbor's venv with exactly the pinned packages (made or remade when it differs)."""
    python = VENV / "bin" / "python"
    if python.exists() and _installed(python) == _pinned():
        return VENV
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "venv", str(VENV)], check=True, timeout=PIP_TIMEOUT_S, env=clean_env()
    )
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # --no-deps: the file lists every package; nothing unpinned may slip in.
    install += ["--no-deps", "-r", str(REQUIREMENTS)]
    done = subprocess.run(
        install, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False, cwd=VENV, env=clean_env()
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install for thumbor failed: {done.stderr[-1500:]}")
    if _installed(python) != _pinned():
        raise RuntimeError(f"thumbor's venv does not match {REQUIREMENTS.name}: {_installed(python)}")
    return VENV


def versions() -> dict[str, str]:
    """The versions of what the anchor runs, from its venv (thumbor, Pillow, tornado, Python)."""
    python = VENV / "bin" / "python"
    script = (
        "import sys, PIL, tornado, thumbor; "
        "print(thumbor.__version__, PIL.__version__, tornado.version, sys.version.split()[0])"
    )
    done = subprocess.run(
        [str(python), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=VENV,
        env=clean_env(),
    )
    thumbor, pillow, tornado, python_version = done.stdout.split()
    return {"thumbor": thumbor, "Pillow": pillow, "tornado": tornado, "python": python_version}


THUMBOR_CONF: Final = """\
# Written by bench/transforms/thumbor.py. Defaults except what is named here.
LOADER = 'thumbor.loaders.http_loader'
ENGINE = 'thumbor.engines.pil'
STORAGE = 'thumbor.storages.file_storage'
FILE_STORAGE_ROOT_PATH = {storage!r}
RESULT_STORAGE = {result_storage!r}
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = {result_path!r}
RESULT_STORAGE_STORES_UNSAFE = True
ALLOW_UNSAFE_URL = True
QUALITY = 80
HTTP_LOADER_REQUEST_TIMEOUT = 20
"""

NGINX_CONF: Final = (
    nginx.KEEPALIVE
    + """\
    upstream thumbor {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{static_port};
        location / {{ root {sources}; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /__health {{ return 200 "ok\\n"; }}
        location / {{
            proxy_pass http://thumbor;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
        }}
    }}
"""
)


@dataclass(slots=True)
class ThumborCluster:
    """Where the anchor listens, where its loader reads sources, and its processes."""

    base: str  # http://127.0.0.1:<nginx port>
    static_host: str  # host:port of the static server, as written in thumbor URLs
    result_storage: bool
    processes: list[ManagedProcess] = field(default_factory=list)  # the thumbors
    front: ManagedProcess | None = None  # nginx: its master and workers
    notes: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        """Every process that serves a request: the thumbors and nginx's (for CPU accounting)."""
        front = process_tree(self.front.pid) if self.front is not None else []
        return [proc.pid for proc in self.processes] + front


@contextmanager
def run_thumbor(sources: Path, workdir: Path, result_storage: bool, cores: int) -> Iterator[ThumborCluster]:
    """`cores` thumbors and their nginx (static sources + round-robin upstream), stopped on exit."""
    if find_tool("nginx") is None:  # before the venv is made
        raise FileNotFoundError("nginx is not installed")
    venv = ensure_venv()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "thumbor.conf"
    conf.write_text(
        THUMBOR_CONF.format(
            storage=str(workdir / "storage"),
            result_storage="thumbor.result_storages.file_storage" if result_storage else None,
            result_path=str(workdir / "result-storage"),
        )
    )
    ports = [free_port() for _ in range(cores)]
    port, static_port = free_port(), free_port()
    env = {**clean_env(), "PYTHONDONTWRITEBYTECODE": "1"}
    with ExitStack() as stack:
        cluster = ThumborCluster(f"http://127.0.0.1:{port}", f"127.0.0.1:{static_port}", result_storage)
        for index, thumbor_port in enumerate(ports):
            argv = [str(venv / "bin" / "thumbor"), "-p", str(thumbor_port), "-i", "127.0.0.1"]
            argv += ["-c", str(conf), "-l", "warning", "--processes", "1"]
            proc = stack.enter_context(
                ManagedProcess(
                    f"thumbor-{index}", argv, workdir / f"thumbor-{index}.log", env=env, cwd=workdir
                )
            )
            cluster.processes.append(proc)
        for proc, thumbor_port in zip(cluster.processes, ports, strict=True):
            proc.wait_for_http(f"http://127.0.0.1:{thumbor_port}/healthcheck", timeout=START_TIMEOUT_S)
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
        front = cluster.front = stack.enter_context(
            nginx.run_nginx(
                "thumbor-nginx",
                workdir / "nginx",
                NGINX_CONF,
                f"{cluster.base}/__health",
                servers=servers,
                static_port=static_port,
                sources=sources,
                port=port,
            )
        )
        front.wait_for_http(f"{cluster.base}/healthcheck")
        storage = "file result storage (unsafe URLs stored)" if result_storage else "no result storage"
        cluster.notes = [
            f"{cores} single-process thumbors behind nginx round-robin (keep-alive), Pillow engine, "
            f"HTTP loader from an nginx static server, file storage for sources, {storage}, /unsafe/ URLs"
        ]
        yield cluster
