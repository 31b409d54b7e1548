"""wrk runs: fixed duration and connections, `--latency`, and a Lua `done()` that prints JSON."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import time
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
    return _result(json.loads(line[len(MARKER) :]), done.stdout)


def _result(data: dict[str, Any], raw: str) -> WrkResult:
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
        raw=raw,
    )


# --- a fixed number of requests ----------------------------------------------------------------
# wrk runs for a duration. For "the same request count" its one thread sends the listed paths
# once, then only `filler` (answered 204 by the load balancer itself, never by a replica) until
# the last listed answer is in; it prints START_MARKER at the first listed request and
# DONE_MARKER at the last answer, then stops. The rate is timed between the two markers (wrk's
# own duration runs until its main thread takes a SIGINT, which the caller sends until it exits).
START_MARKER: Final = "BENCHSTART"
DONE_MARKER: Final = "BENCHDONE"
COUNTED_LUA: Final = r"""
local n = #paths
local i = 0
local verified = false
answered = 0
hits = 0
misses = 0
other = 0
failed = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

request = function()
  if not verified then
    -- wrk calls request() once before the run to check the script (script_verify_request):
    -- answer it without counting it as one of the listed requests.
    verified = true
    return wrk.format("GET", paths[1])
  end
  i = i + 1
  if i == 1 then
    io.write("BENCHSTART\n")
    io.flush()
  end
  if i <= n then
    return wrk.format("GET", paths[i])
  end
  return wrk.format("GET", filler)
end

response = function(status, headers, body)
  if status == 204 then
    return
  end
  answered = answered + 1
  local cache = headers["X-Cache"]
  if status >= 400 then
    failed = failed + 1
  elseif cache == "HIT" then
    hits = hits + 1
  elseif cache == "MISS" then
    misses = misses + 1
  else
    other = other + 1
  end
  if answered == n then
    io.write("BENCHDONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

done = function(summary, latency, requests)
  local t = threads[1]
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%.0f,\"bytes\":%.0f,\"duration_us\":%.0f,"
    .. "\"connect_errors\":%.0f,\"read_errors\":%.0f,\"write_errors\":%.0f,"
    .. "\"status_errors\":%.0f,\"timeouts\":%.0f,"
    .. "\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,"
    .. "\"mean_us\":%.1f,\"max_us\":%.0f,"
    .. "\"answered\":%.0f,\"hits\":%.0f,\"misses\":%.0f,\"other\":%.0f,\"failed\":%.0f}\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max,
    t:get("answered"), t:get("hits"), t:get("misses"), t:get("other"), t:get("failed")))
end
"""


@dataclass(frozen=True, slots=True)
class CountedResult:
    """A wrk run of exactly `answered` listed requests, with their X-Cache tally."""

    wrk: WrkResult  # its duration_s runs past the last answer (until wrk took the SIGINT)
    answered: int
    hits: int
    misses: int
    other: int  # STALE or no X-Cache
    failed: int  # status >= 400
    seconds: float  # from the first listed request to the last listed answer

    @property
    def rps(self) -> float:
        """Listed requests per second (the filler at the end is not counted)."""
        return self.answered / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.wrk.as_dict(),
            "answered": self.answered,
            "hits": self.hits,
            "misses": self.misses,
            "other": self.other,
            "failed": self.failed,
            "seconds": self.seconds,
            "rps_listed": self.rps,
        }


def counted_script(path: Path, url_paths: list[str], filler: str) -> Path:
    """A script that sends each of `url_paths` once (one wrk thread), then `filler` until done."""
    entries = ",\n".join(json.dumps(p) for p in url_paths)
    path.write_text(f"paths = {{\n{entries}\n}}\nfiller = {json.dumps(filler)}\n" + COUNTED_LUA)
    return path


def run_wrk_counted(url: str, script: Path, connections: int, max_duration_s: int) -> CountedResult:
    """Run `script` (from `counted_script`) with one thread until its listed requests are answered."""
    wrk = wrk_binary()
    if wrk is None:
        raise FileNotFoundError("wrk is not installed")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max_duration_s}s", "--timeout", "10s", "--latency"]
    proc = subprocess.Popen(
        [*argv, "-s", str(script), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    first = done = math.nan
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wrk ends by itself after max_duration_s at the latest
            lines.append(line)
            if line.startswith(START_MARKER):
                first = time.perf_counter()
            elif line.startswith(DONE_MARKER):
                done = time.perf_counter()
                break
        # A SIGINT ends wrk's sleep(duration) only if its main thread takes it; until the stopped
        # worker thread has exited the kernel may hand it to that one instead: send it again.
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        rest, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    summary = next((x for x in output.splitlines() if x.startswith(MARKER)), None)
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed (status {proc.returncode}): {output[-2000:]} {errors[-2000:]}")
    data = json.loads(summary[len(MARKER) :])
    return CountedResult(
        wrk=_result(data, output),
        answered=int(data["answered"]),
        hits=int(data["hits"]),
        misses=int(data["misses"]),
        other=int(data["other"]),
        failed=int(data["failed"]),
        seconds=done - first,
    )
