"""`make soak` / `python -m bench.soak.run`: memory over time under a mixed load, bounded.

Azurite, a real redis-server, a small app (`bench.soak.app`) and imgproxy as `python -m imgproxy`
with SOAK_WORKERS (2) workers, transforms, the disk tier, Redis and the pass-through on, and
`cache.max_bytes` SOAK_CACHE_MIB (64) per worker. SOAK_CLIENTS (6) clients run `bench.soak.load`'s
mix for SOAK_SECONDS (1,800); halfway Redis is killed and started again after SOAK_REDIS_DOWN_S
(5). Every SOAK_INTERVAL_S (duration / 300, at least 1) each worker's anonymous RSS, open files and
sockets are sampled. SOAK_MODE picks the allocator (`bench.soak.churn.mode_env`: `default`,
`glibc`, `jemalloc`, `jemalloc-plain`).

The figures (`figures`): per worker, RSS at the end of the warm-up (the first five minutes, or
40 % of a shorter run) and at the end, each the median of a window (10 % of the run, 5-60 s), and
their growth; 5xx outside the Redis outage; open files and sockets at both ends. The result is
bench/results/soak-<UTC time>.json and its Markdown (.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from devtools.azurite import ROOT, free_port, run_azurite
from devtools.redis_server import RedisServer, run_redis

from ..markdown import Table, columns, num, pct, to_markdown
from ..procs import ManagedProcess
from ..sources import source_bytes
from ..targets import new_workdir, run_imgproxy
from ..transforms.seed import upload
from .churn import clear_allocator_env, knob, mode_env
from .load import BIG_BLOB, BIG_SIZE, POOL, Load, blob_bytes, pool_blob
from .sampler import MIB, Sample, Sampler, write_result

TOKEN: Final = "soak-admin-token"
WARMUP_S: Final = 300.0
REDIS_BACK_S: Final = 30.0  # longest wait, after Redis restarts, for every worker to see it


@contextmanager
def soak_app(workdir: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.soak.app", "--port", str(port)]
    with ManagedProcess("soak-app", argv, workdir / "soak-app.log", cwd=ROOT) as proc:
        proc.wait_for_output("soak app on", timeout=30)
        yield f"http://127.0.0.1:{port}"


def seed_blobs(connection_string: str) -> None:
    blobs = {pool_blob(i): blob_bytes(i) for i in range(POOL)}
    blobs[BIG_BLOB] = os.urandom(BIG_SIZE)
    blobs["soak/photo-12mp.jpg"] = source_bytes("photo-12mp.jpg")
    blobs["soak/photo-2.5mp.jpg"] = source_bytes("photo-2.5mp.jpg")
    asyncio.run(upload(connection_string, blobs))


def window_median(samples: list[Sample], worker: int, start: float, end: float) -> int:
    values = [s.rss_anon[worker] for s in samples if start <= s.t <= end and worker < len(s.rss_anon)]
    return int(statistics.median(values)) if values else 0


def figures(samples: list[Sample], duration_s: float) -> dict[str, Any]:
    """Per worker: RSS after the warm-up and at the end (window medians), growth, peaks; fds."""
    warmup = min(WARMUP_S, duration_s * 0.4)
    window = max(5.0, min(60.0, duration_s * 0.1))
    last = samples[-1].t if samples else 0.0
    workers = min(len(s.rss_anon) for s in samples) if samples else 0
    per_worker = []
    for worker in range(workers):
        after_warmup = window_median(samples, worker, warmup, warmup + window)
        end = window_median(samples, worker, last - window, last)
        per_worker.append(
            {
                "rss_anon_after_warmup": after_warmup,
                "rss_anon_end": end,
                "rss_anon_peak": max(s.rss_anon[worker] for s in samples),
                "growth": (end / after_warmup - 1) if after_warmup else None,
                "open_files": [samples[0].open_files[worker], samples[-1].open_files[worker]],
                "sockets": [samples[0].sockets[worker], samples[-1].sockets[worker]],
            }
        )
    return {"warmup_s": warmup, "window_s": window, "workers": per_worker}


def redis_up_everywhere(base: str) -> bool:
    """Whether every worker says its link to Redis is up again (`/admin/cache`'s `redis_up`)."""
    request = urllib.request.Request(f"{base}/admin/cache", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            stats = json.load(response)
    except (OSError, ValueError):
        return False
    workers = stats.get("per_worker", {"0": stats})  # worker index -> its own figures
    return all(worker.get("redis_up") for worker in workers.values())


def redis_outage(redis: RedisServer, load: Load, at: float, down_s: float) -> None:
    """At monotonic time `at`: kill Redis, start it again `down_s` later; 5xx from the kill until
    every worker says Redis is up again (polled, at most REDIS_BACK_S) are the run's own doing."""
    time.sleep(max(0.0, at - time.monotonic()))  # a scheduled moment in a background thread
    began = time.monotonic()
    load.counts.caused_window = (began, began + down_s + REDIS_BACK_S)
    redis.kill()
    time.sleep(down_s)  # the outage itself
    redis.start()
    deadline = time.monotonic() + REDIS_BACK_S
    while not redis_up_everywhere(load.base) and time.monotonic() < deadline:
        time.sleep(0.2)  # a poll of another process's state, bounded by REDIS_BACK_S
    load.counts.caused_window = (began, time.monotonic())
    load.counts.outage_s = round(time.monotonic() - began, 2)


def soak(
    connection_string: str, redis: RedisServer, duration_s: float, mode: str, cache_mib: int | None = None
) -> dict[str, Any]:
    """One soak run (the blobs seeded: `seed_blobs`; the allocator variables of this process's
    environment, which imgproxy inherits, removed: `clear_allocator_env`)."""
    workers = knob("SOAK_WORKERS", 2)
    cache_mib = knob("SOAK_CACHE_MIB", 64) if cache_mib is None else cache_mib
    down_s = float(os.environ.get("SOAK_REDIS_DOWN_S", "5"))
    interval = float(os.environ.get("SOAK_INTERVAL_S", str(max(1.0, duration_s / 300))))
    with new_workdir() as tmp, soak_app(Path(tmp)) as app_url:
        workdir = Path(tmp)
        overrides = {
            "IMGPROXY_SERVER_WORKERS": str(workers),
            "IMGPROXY_TRANSFORM_ENABLED": "true",
            "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED": "true",
            "IMGPROXY_CACHE_MAX_ITEMS": "100000",
            "IMGPROXY_CACHE_MAX_BYTES": str(cache_mib * MIB),
            "IMGPROXY_DISK_ENABLED": "true",
            "IMGPROXY_DISK_PATH": str(workdir / "disk"),
            "IMGPROXY_DISK_MAX_BYTES": str(knob("SOAK_DISK_MIB", 256) * MIB),
            "IMGPROXY_REDIS_URL": redis.url,
            "IMGPROXY_UPSTREAM_URL": app_url,
            "IMGPROXY_ADMIN_TOKEN": TOKEN,
            **mode_env(mode),
        }
        with run_imgproxy(connection_string, workdir, f"imgproxy-soak-{mode}", overrides) as target:
            sampler = Sampler(target.process.pid, interval).start()
            load = Load(target.base, TOKEN)
            began = time.monotonic()
            until = began + duration_s
            outage = threading.Thread(
                target=redis_outage, args=(redis, load, began + duration_s / 2, down_s), daemon=True
            )
            outage.start()
            asyncio.run(load.run(knob("SOAK_CLIENTS", 6), until))
            outage.join(timeout=60)
            samples = sampler.stop()
            log_tail = target.process.tail(5)
    counts = load.counts
    return {
        "mode": mode,
        "duration_s": duration_s,
        "workers": workers,
        "cache_max_bytes": cache_mib * MIB,
        "requests": load.requests,
        "statuses": dict(sorted(counts.statuses.items())),
        "unexpected_5xx": counts.unexpected_5xx,
        "caused_5xx": counts.caused_5xx,
        "wrong_bodies": counts.wrong_bodies,
        "purge_retries": dict(counts.purge_retries),
        "transport_errors": counts.transport_errors,
        "redis_restarts": redis.starts - 1,
        "redis_outage_s": counts.outage_s,
        "outage_at_s": round(counts.caused_window[0] - began, 1) if counts.caused_window else None,
        "five_xx_at_s": [round(t - began, 2) for t in counts.five_xx_times],
        "figures": figures(samples, duration_s),
        "samples": [[s.t, s.rss_anon, s.open_files, s.sockets] for s in samples],
        "log_tail": log_tail,
    }


def tables(result: dict[str, Any]) -> list[Table]:
    rows = [
        [
            str(index),
            num(w["rss_anon_after_warmup"] / MIB, 1),
            num(w["rss_anon_end"] / MIB, 1),
            num(w["rss_anon_peak"] / MIB, 1),
            pct(w["growth"]),
            f"{w['open_files'][0]} -> {w['open_files'][1]}",
            f"{w['sockets'][0]} -> {w['sockets'][1]}",
        ]
        for index, w in enumerate(result["figures"]["workers"])
    ]
    head = "worker | RSS anon after warm-up MiB | at end MiB | peak MiB | growth | open files | sockets"
    totals = [
        [
            result["mode"],
            num(result["duration_s"]),
            num(result["requests"]),
            num(result["requests"] / result["duration_s"], 1),
            str(result["unexpected_5xx"]),
            str(result["caused_5xx"]),
            str(result["wrong_bodies"]),
            str(result["transport_errors"]),
        ]
    ]
    return [
        Table(
            "Soak",
            columns(
                "allocator | s | requests | req/s | unexpected 5xx | 5xx in Redis outage"
                " | wrong bodies | transport errors"
            ),
            totals,
        ),
        Table("Soak: memory per worker", columns(head), rows, level=3),
        Table(
            "Soak: answers",
            columns("action status | count"),
            [[k, num(v)] for k, v in result["statuses"].items()],
            level=3,
        ),
    ]


def main() -> int:
    duration = float(os.environ.get("SOAK_SECONDS", "1800"))
    mode = os.environ.get("SOAK_MODE", "default")
    clear_allocator_env()
    with run_azurite() as azurite, run_redis() as redis:
        seed_blobs(azurite.connection_string)
        result = soak(azurite.connection_string, redis, duration, mode)
    path = write_result(result, "soak", to_markdown(tables(result)))
    print(to_markdown(tables(result)))
    print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
