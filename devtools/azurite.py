"""Start and stop the pinned Azurite blob emulator (installed by `npm ci` into node_modules)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
AZURITE_BIN: Final = ROOT / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT: Final = "devstoreaccount1"
ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
READY_LINE: Final = "successfully listens on"
START_TIMEOUT_S: Final = 60.0


def connection_string(blob_endpoint: str) -> str:
    """A SharedKey connection string for the development account at `blob_endpoint`."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={blob_endpoint.rstrip('/')}/{ACCOUNT};"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class AzuriteServer:
    host: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.endpoint)


@contextmanager
def run_azurite(host: str = "127.0.0.1", port: int | None = None) -> Iterator[AzuriteServer]:
    """Run Azurite (blob service only, in memory) until the block exits."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run `make install` (npm ci)")
    port = port or free_port(host)
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir:
        proc = subprocess.Popen(
            [
                str(AZURITE_BIN),
                "--blobHost",
                host,
                "--blobPort",
                str(port),
                "--inMemoryPersistence",
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=workdir,  # anything Azurite writes stays out of the tree
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        reader: threading.Thread | None = None
        try:
            reader = _wait_until_listening(proc)
            yield AzuriteServer(host, port)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if reader is not None:
                reader.join(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


def _wait_until_listening(proc: subprocess.Popen[str]) -> threading.Thread:
    """Read Azurite's output until it says it listens (an event, not a sleep loop)."""
    assert proc.stdout is not None
    seen: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not ready.is_set():
                seen.append(line)
                if READY_LINE in line:
                    ready.set()
        # Keep draining so Azurite never blocks on a full pipe.

    thread = threading.Thread(target=reader, daemon=True, name="azurite-output")
    thread.start()
    if not ready.wait(START_TIMEOUT_S) or proc.poll() is not None:
        proc.kill()
        raise RuntimeError("Azurite did not start:\n" + "".join(seen))
    return thread
