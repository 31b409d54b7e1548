"""Memory under variant churn: the issue's scenario, scaled to minutes, under each allocator.

One worker, `cache.max_bytes` small enough that the variants do not fit (CHURN_CACHE_MIB, 64),
the disk tier on: CHURN_VARIANTS (600) distinct cold variants of 12 MP and 2.5 MP JPEG sources
(widths 100-1,600; JPEG, WebP, PNG), CHURN_CLIENTS (4) at a time, then CHURN_HIT_PASSES (4) passes
over them in shuffled order: disk hits promoting into memory, memory evictions. The worker's
anonymous RSS is sampled every second. Modes: `glibc` (`server.malloc_arena_max = 0`: the C
library's defaults), `default` (the server's default settings) and, where Debian's libjemalloc2
is installed, `jemalloc` (preloaded, the server's `MALLOC_CONF`) and `jemalloc-plain` (preloaded,
jemalloc's own defaults).

`python -m bench.soak.churn [mode ...]` prints the JSON figures; `bench.soak.run` includes them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp

from devtools.azurite import run_azurite

from ..markdown import Table, columns, num, to_markdown
from ..sources import source_bytes
from ..targets import new_workdir, run_imgproxy
from ..transforms.seed import upload
from .sampler import MIB, Sampler, write_result

JEMALLOC: Final = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
SOURCES: Final = {"soak/photo-12mp.jpg": "photo-12mp.jpg", "soak/photo-2.5mp.jpg": "photo-2.5mp.jpg"}
FORMATS: Final = ("jpeg", "webp", "png")


def knob(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def modes_available() -> list[str]:
    return ["glibc", "default", *(["jemalloc", "jemalloc-plain"] if JEMALLOC.exists() else [])]


def mode_env(mode: str) -> dict[str, str]:
    """imgproxy's environment for an allocator mode (`clear_allocator_env` first: nothing inherited
    decides it)."""
    env: dict[str, str] = {}
    if mode == "glibc":
        env["IMGPROXY_SERVER_MALLOC_ARENA_MAX"] = "0"
    elif mode == "jemalloc":
        env["LD_PRELOAD"] = str(JEMALLOC)
    elif mode == "mmap":  # the server's default, and every allocation of 128 KiB or more mmapped
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    elif mode == "jemalloc-plain":
        env |= {"LD_PRELOAD": str(JEMALLOC), "IMGPROXY_SERVER_MALLOC_ARENA_MAX": "0"}
    return env


def clear_allocator_env() -> None:
    """This process's allocator variables removed: imgproxy inherits the environment."""
    for name in (
        "MALLOC_ARENA_MAX",
        "MALLOC_CONF",
        "MALLOC_MMAP_THRESHOLD_",
        "LD_PRELOAD",
        "IMGPROXY_SERVER_MALLOC_ARENA_MAX",
    ):
        os.environ.pop(name, None)


def variants(count: int, seed: int = 22) -> list[str]:
    """`count` distinct variant paths: (source, width, format) drawn without repeats."""
    rng = random.Random(seed)
    chosen: set[tuple[str, int, str]] = set()
    while len(chosen) < count:
        chosen.add((rng.choice(list(SOURCES)), rng.randint(100, 1600), rng.choice(FORMATS)))
    return [f"/images/{blob}?w={width}&fm={fm}" for blob, width, fm in sorted(chosen)]


async def fetch_all(base: str, paths: Sequence[str], clients: int) -> dict[int, int]:
    """GET every path, `clients` at a time; statuses counted."""
    statuses: dict[int, int] = {}
    queue = list(reversed(paths))
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            path = queue.pop()
            try:
                async with session.get(base + path) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] = statuses.get(0, 0) + 1

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    return statuses


async def admin_stats(base: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(f"{base}/admin/cache", headers=headers) as r:
        body: dict[str, Any] = await r.json()
        return body


def run_mode(connection_string: str, mode: str, paths: list[str]) -> dict[str, Any]:
    cache_mib = knob("CHURN_CACHE_MIB", 64)
    clients = knob("CHURN_CLIENTS", 4)
    passes = knob("CHURN_HIT_PASSES", 4)
    token = "churn-token"
    overrides = {
        "IMGPROXY_SERVER_WORKERS": "1",
        "IMGPROXY_TRANSFORM_ENABLED": "true",
        "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED": "true",
        "IMGPROXY_CACHE_MAX_ITEMS": "100000",
        "IMGPROXY_CACHE_MAX_BYTES": str(cache_mib * MIB),
        "IMGPROXY_DISK_ENABLED": "true",
        "IMGPROXY_ADMIN_TOKEN": token,
        **mode_env(mode),
    }
    with new_workdir() as tmp:
        workdir = Path(tmp)
        overrides["IMGPROXY_DISK_PATH"] = str(workdir / "disk")
        with run_imgproxy(connection_string, workdir, f"imgproxy-{mode}", overrides) as target:
            environ = Path(f"/proc/{target.process.pid}/environ").read_bytes().split(b"\0")
            sampler = Sampler(target.process.pid).start()
            base_anon = sampler.sample().rss_anon[0]
            began = time.monotonic()
            cold = asyncio.run(fetch_all(target.base, paths, clients))
            cold_s = time.monotonic() - began
            after_cold = sampler.sample().rss_anon[0]
            hits: dict[int, int] = {}
            rng = random.Random(7)
            for _ in range(passes):
                order = list(paths)
                rng.shuffle(order)
                for status, n in asyncio.run(fetch_all(target.base, order, clients)).items():
                    hits[status] = hits.get(status, 0) + n
            end = sampler.sample().rss_anon[0]
            stats = asyncio.run(admin_stats(target.base, token))
            samples = sampler.stop()
    allocator_vars = sorted(
        v.decode() for v in environ if v.startswith((b"MALLOC_", b"LD_PRELOAD=")) and not v.endswith(b"=")
    )
    return {
        "mode": mode,
        "environ": allocator_vars,
        "cache_max_bytes": cache_mib * MIB,
        "variants": len(paths),
        "cold_statuses": {str(k): v for k, v in sorted(cold.items())},
        "cold_s": round(cold_s, 1),
        "hit_statuses": {str(k): v for k, v in sorted(hits.items())},
        "rss_anon_start": base_anon,
        "rss_anon_after_cold": after_cold,
        "rss_anon_end": end,
        "rss_anon_peak": max(max(s.rss_anon) for s in samples),
        "cache_bytes": stats.get("cache_bytes"),
        "evictions": stats.get("evictions"),
        "disk_hits": stats.get("disk_hits"),
        "samples": [[s.t, s.rss_anon[0]] for s in samples[:: max(1, len(samples) // 120)]],
    }


def run_churn(connection_string: str, modes: Sequence[str]) -> list[dict[str, Any]]:
    """Upload the two sources, then each mode in turn on a fresh worker and disk directory."""
    clear_allocator_env()
    asyncio.run(upload(connection_string, {blob: source_bytes(name) for blob, name in SOURCES.items()}))
    paths = variants(knob("CHURN_VARIANTS", 600))
    results = []
    for mode in modes:
        print(f"[churn] {mode}", file=sys.stderr, flush=True)
        results.append(run_mode(connection_string, mode, paths))
        print(
            json.dumps({k: v for k, v in results[-1].items() if k != "samples"}), file=sys.stderr, flush=True
        )
    return results


def table(results: list[dict[str, Any]]) -> Table:
    head = (
        "allocator | cache.max_bytes MiB | RSS anon idle MiB | after cold MiB | peak MiB | end MiB"
        " | evictions | disk hits"
    )
    rows = [
        [
            r["mode"],
            num(r["cache_max_bytes"] / MIB),
            num(r["rss_anon_start"] / MIB, 1),
            num(r["rss_anon_after_cold"] / MIB, 1),
            num(r["rss_anon_peak"] / MIB, 1),
            num(r["rss_anon_end"] / MIB, 1),
            num(r["evictions"]),
            num(r["disk_hits"]),
        ]
        for r in results
    ]
    return Table(
        f"Variant churn: {results[0]['variants']} cold variants, then their hits", columns(head), rows
    )


def main(argv: list[str]) -> int:
    modes = argv or modes_available()
    with run_azurite() as azurite:
        results = run_churn(azurite.connection_string, modes)
    markdown = to_markdown([table(results)])
    path = write_result(results, "churn", markdown)
    print(markdown)
    print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
