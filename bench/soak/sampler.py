"""What the kernel says of each serving process, sampled: anonymous RSS, open files, connections.

Anonymous RSS (`RssAnon`) is the figure to size a container by: the file-backed part (the
interpreter, libvips, the page cache of mapped files) is shared and reclaimable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from devtools.processes import process_tree

MIB: Final = 1024 * 1024
RESULTS: Final = Path(__file__).resolve().parents[1] / "results"


def write_result(result: Any, prefix: str, markdown: str) -> Path:
    """bench/results/<prefix>-<UTC time>.json and its Markdown beside it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    path = RESULTS / f"{prefix}-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown)
    return path


def status_field(pid: int, name: str) -> int:
    """A `kB` field of /proc/<pid>/status, in bytes (0 once the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def open_files(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def sockets(pid: int) -> int:
    """Open sockets of `pid` (client, Azure, Redis and app connections, listeners)."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def serving_pids(pid: int) -> list[int]:
    """The processes that serve: the workers under a supervisor, else `pid` itself."""
    tree = process_tree(pid)
    return tree[1:] if len(tree) > 1 else tree


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    rss_anon: list[int]  # bytes, per serving process
    open_files: list[int]
    sockets: list[int]


@dataclass
class Sampler:
    """Samples `pid`'s serving processes every `interval_s` on a thread until stopped."""

    pid: int
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> Sample:
        pids = serving_pids(self.pid)
        return Sample(
            t=0.0,
            rss_anon=[status_field(p, "RssAnon") for p in pids],
            open_files=[open_files(p) for p in pids],
            sockets=[sockets(p) for p in pids],
        )

    def start(self) -> Sampler:
        began = time.monotonic()

        def loop() -> None:
            while not self._stop.is_set():
                one = self.sample()
                one.t = round(time.monotonic() - began, 2)
                self.samples.append(one)
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples

    def peak_anon(self) -> int:
        """The highest sampled anonymous RSS of any one serving process."""
        return max((max(s.rss_anon, default=0) for s in self.samples), default=0)
