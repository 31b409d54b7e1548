"""The proxy as a real process (the CLI), for tests: start it, wait until it serves, stop it."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from azure.storage.blob.aio import ContainerClient

from devtools.azurite import ROOT, AzuriteServer, connection_string, free_port
from tests.support.origin_proxy import OriginProxy

CONFIG: Final = ROOT / "config.toml"


def server_env(azurite: AzuriteServer | str, container: str, port: int, **extra: str) -> dict[str, str]:
    connection = azurite if isinstance(azurite, str) else azurite.connection_string
    return {
        **os.environ,
        "IMGPROXY_ORIGIN_CONNECTION_STRING": connection,
        "IMGPROXY_ORIGIN_CONTAINER": container,
        "IMGPROXY_SERVER_PORT": str(port),
        **extra,
    }


def disk_env(directory: Path) -> dict[str, str]:
    """The environment that turns the disk tier on, in `directory`."""
    return {"IMGPROXY_DISK_ENABLED": "true", "IMGPROXY_DISK_PATH": str(directory)}


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[str]
    log: collections.deque[str]  # the last LOG_LINES lines of its stderr (complete once stopped)


LOG_LINES: Final = 10_000


@contextmanager
def start_server(azurite: AzuriteServer | str, container: str, **env: str) -> Iterator[Server]:
    """The proxy as a separate process on a free port, started by the CLI."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgproxy", "--config", str(CONFIG)],
        env=server_env(azurite, container, port, **env),
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = int(env.get("IMGPROXY_SERVER_WORKERS", "1"))
    serving = threading.Semaphore(0)
    log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "serving on" in line:
                serving.release()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        for _ in range(workers):  # every worker says it serves
            assert serving.acquire(timeout=30), "imgproxy did not start"
        yield Server(f"http://127.0.0.1:{port}", proc, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


WORKER_TOKEN: Final = "process-admin-token"


@contextmanager
def two_workers(origin: OriginProxy, container: ContainerClient, **env: str) -> Iterator[Server]:
    """`server.workers = 2` (memory only unless `env` turns the disk tier on), admin API on, no drain."""
    with start_server(
        connection_string(origin.endpoint),
        container.container_name,
        IMGPROXY_SERVER_WORKERS="2",
        IMGPROXY_SERVER_DRAIN_S="0",
        IMGPROXY_ADMIN_TOKEN=WORKER_TOKEN,
        **env,
    ) as running:
        yield running
