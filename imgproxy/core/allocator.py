"""The C allocator's settings for the serving processes (`server.malloc_arena_max`).

glibc's malloc gives each thread that contends for it an arena of its own, up to 8 per core; libvips'
threads decode and encode megabytes in each, and what an arena freed in the middle of its heap stays
in the process: measured, one worker with `cache.max_bytes` 512 MiB reached 1,282 MB of RSS under
variant churn, 771-787 MB with `MALLOC_ARENA_MAX=2` (docs/benchmarks.md#memory-under-churn).

glibc reads `MALLOC_ARENA_MAX` once, at process start: the supervisor therefore puts it in its
workers' environment (`worker_environment`), and a single process, which has no supervisor, sets
the same limit with `mallopt(M_ARENA_MAX)` before it starts any thread (`limit_arenas`). An
operator's own `MALLOC_ARENA_MAX` wins over both. Where jemalloc is preloaded (`LD_PRELOAD`), glibc's
arenas are not used; jemalloc gets `MALLOC_CONF` with a short dirty-page decay instead, unless the
operator set one (jemalloc reads it at start too, so a single process re-executes itself once to get
it: `needs_reexec`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping
from typing import Final

log = logging.getLogger("imgproxy")

ARENA_ENV: Final = "MALLOC_ARENA_MAX"
JEMALLOC_ENV: Final = "MALLOC_CONF"
# jemalloc's defaults keep freed pages 10 s (dirty) then 10 s more (muzzy); after a burst of
# transforms that is hundreds of MB held for nothing. 1 s then straight back to the kernel.
JEMALLOC_CONF: Final = "dirty_decay_ms:1000,muzzy_decay_ms:0"
M_ARENA_MAX: Final = -8  # glibc's malloc.h
REEXEC_MARK: Final = "IMGPROXY_ALLOCATOR_SET"  # set before re-executing: never twice


def jemalloc_preloaded(environ: Mapping[str, str]) -> bool:
    return "jemalloc" in environ.get("LD_PRELOAD", "")


def allocator_settings(environ: Mapping[str, str], arena_max: int) -> dict[str, str]:
    """The variables to add to `environ` for a serving process: none of the operator's are changed,
    nothing at all with `arena_max` 0."""
    if arena_max <= 0:
        return {}
    if jemalloc_preloaded(environ):
        return {} if JEMALLOC_ENV in environ else {JEMALLOC_ENV: JEMALLOC_CONF}
    return {} if ARENA_ENV in environ else {ARENA_ENV: str(arena_max)}


def worker_environment(environ: Mapping[str, str], arena_max: int) -> dict[str, str]:
    """A supervised worker's whole environment: `environ` with `allocator_settings` added."""
    return {**environ, **allocator_settings(environ, arena_max)}


def needs_reexec(environ: Mapping[str, str], arena_max: int) -> bool:
    """Whether a single process must start again to give jemalloc its `MALLOC_CONF` (glibc's
    limit needs no restart: `limit_arenas`)."""
    return (
        REEXEC_MARK not in environ
        and jemalloc_preloaded(environ)
        and bool(allocator_settings(environ, arena_max))
    )


def limit_arenas(environ: Mapping[str, str], arena_max: int) -> bool:
    """In this process, glibc's arenas limited to `arena_max` unless the environment already says
    (the operator's value, or the supervisor's, which glibc has read). Call before any thread
    starts: glibc fixes its arena limit when the ninth arena is made. True if it was set here."""
    if ARENA_ENV not in allocator_settings(environ, arena_max):
        return False
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - not glibc (e.g. musl: one arena anyway)
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # pragma: no cover - a libc without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arena_max) != 1:  # pragma: no cover - glibc accepts any positive value
        log.warning("mallopt(M_ARENA_MAX, %d) failed; set %s=%d instead", arena_max, ARENA_ENV, arena_max)
        return False
    # Also for anything this process starts (the transform engine's helpers, if any).
    os.environ.setdefault(ARENA_ENV, str(arena_max))
    return True
