"""wrk runs: fixed duration and connections, `--latency`, and a Lua `done()` that prints JSON."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .procs import find_tool

MARKER: Final = "BENCHJSON "
DONE_LUA: Final = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%.0f,\"bytes\":%.0f,\"duration_us\":%.0f,"
    .. "\"connect_errors\":%.0f,\"read_errors\":%.0f,\"write_errors\":%.0f,"
    .. "\"status_errors\":%.0f,\"timeouts\":%.0f,"
    .. "\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,"
    .. "\"mean_us\":%.1f,\"max_us\":%.0f}\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    wire_bytes: int
    duration_s: float
    errors: int  # connect + read + write + timeouts + status >= 400
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    raw: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "wire_bytes": self.wire_bytes,
            "duration_s": self.duration_s,
            "errors": self.errors,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
        }


def fixed_script(path: Path) -> Path:
    """A script with only `done()`: wrk sends its one pre-formatted request."""
    path.write_text(DONE_LUA)
    return path


def mix_script(path: Path, url_paths: list[str]) -> Path:
    """A script that cycles through `url_paths` (precomputed in Python, written into the file)."""
    entries = ",\n".join(json.dumps(p) for p in url_paths)  # JSON strings are valid Lua strings here
    path.write_text(
        "local paths = {\n"
        + entries
        + "\n}\nlocal n = #paths\nlocal i = 0\n"
        + 'request = function()\n  i = i % n + 1\n  return wrk.format("GET", paths[i])\nend\n'
        + DONE_LUA
    )
    return path


def counter_script(path: Path, prefix: str, start: int, suffix: str) -> Path:
    """A script whose request i (from 0) is `prefix .. start + i .. suffix`: a new URL every time.

    For cold runs with one wrk thread (one Lua state, one counter): no URL repeats within the run,
    and the caller starts the next run past the last number this one can have used.
    """
    path.write_text(
        f"local prefix = {json.dumps(prefix)}\nlocal suffix = {json.dumps(suffix)}\nlocal n = {start - 1}\n"
        + 'request = function()\n  n = n + 1\n  return wrk.format("GET", prefix .. n .. suffix)\nend\n'
        + DONE_LUA
    )
    return path


def paced_script(path: Path, delay_ms: int) -> Path:
    """A script that waits `delay_ms` before each request on a connection: a light, steady prober.

    wrk starts a request's clock when it writes it, after the delay, so latency excludes the wait.
    """
    path.write_text(f"delay = function()\n  return {int(delay_ms)}\nend\n" + DONE_LUA)
    return path


def wrk_binary() -> str | None:
    return find_tool("wrk")


def run_wrk(url: str, script: Path, duration_s: int, connections: int, threads: int = 1) -> WrkResult:
    wrk = wrk_binary()
    if wrk is None:
        raise FileNotFoundError("wrk is not installed")
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (status {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
        )
    data = json.loads(line[len(MARKER) :])
    errors = sum(
        int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=int(data["requests"]),
        wire_bytes=int(data["bytes"]),
        duration_s=float(data["duration_us"]) / 1e6,
        errors=errors,
        p50_ms=float(data["p50_us"]) / 1e3,
        p90_ms=float(data["p90_us"]) / 1e3,
        p99_ms=float(data["p99_us"]) / 1e3,
        p999_ms=float(data["p999_us"]) / 1e3,
        mean_ms=float(data["mean_us"]) / 1e3,
        max_ms=float(data["max_us"]) / 1e3,
        raw=done.stdout,
    )
