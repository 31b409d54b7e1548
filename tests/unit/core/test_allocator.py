"""`core.allocator`: which variables a serving process gets, and that glibc's arena limit set in
process (`limit_arenas`) really bounds the arenas threads make (counted by glibc's malloc_stats)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from imgproxy.core.allocator import (
    JEMALLOC_CONF,
    REEXEC_MARK,
    allocator_settings,
    needs_reexec,
    worker_environment,
)

JEMALLOC = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}


def test_glibc_gets_the_arena_limit() -> None:
    assert allocator_settings({}, 2) == {"MALLOC_ARENA_MAX": "2"}
    assert allocator_settings({"PATH": "/bin"}, 3) == {"MALLOC_ARENA_MAX": "3"}


def test_the_operators_own_values_win() -> None:
    assert allocator_settings({"MALLOC_ARENA_MAX": "8"}, 2) == {}
    assert allocator_settings({**JEMALLOC, "MALLOC_CONF": "narenas:1"}, 2) == {}
    assert worker_environment({"MALLOC_ARENA_MAX": "8", "X": "y"}, 2) == {"MALLOC_ARENA_MAX": "8", "X": "y"}


def test_zero_leaves_the_allocator_alone() -> None:
    assert allocator_settings({}, 0) == {}
    assert allocator_settings(JEMALLOC, 0) == {}
    assert not needs_reexec(JEMALLOC, 0)


def test_preloaded_jemalloc_gets_a_short_decay_instead() -> None:
    assert allocator_settings(JEMALLOC, 2) == {"MALLOC_CONF": JEMALLOC_CONF}
    assert worker_environment({"A": "b", **JEMALLOC}, 2) == {
        "A": "b",
        **JEMALLOC,
        "MALLOC_CONF": JEMALLOC_CONF,
    }


def test_only_a_single_process_under_jemalloc_starts_again_and_only_once() -> None:
    assert needs_reexec(JEMALLOC, 2)
    assert not needs_reexec({**JEMALLOC, REEXEC_MARK: "1"}, 2)
    assert not needs_reexec({**JEMALLOC, "MALLOC_CONF": JEMALLOC_CONF}, 2)
    assert not needs_reexec({}, 2)  # glibc: mallopt in process, no restart


ARENAS_SCRIPT = textwrap.dedent(
    """
    import ctypes, os, sys, threading
    from imgproxy.core.allocator import limit_arenas
    print("set:", limit_arenas(os.environ, int(sys.argv[1])), flush=True)
    gate = threading.Barrier(13)
    def work():
        held = [bytearray(64 * 1024) for _ in range(4)]  # through malloc, in this thread's arena
        gate.wait()
        gate.wait()
    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    gate.wait()
    ctypes.CDLL(None).malloc_stats()  # glibc: one "Arena N:" block per arena, on stderr
    gate.wait()
    for t in threads:
        t.join()
    """
)


def arenas(arena_max: int) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "LD_PRELOAD")}
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_SCRIPT, str(arena_max)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


def test_limit_arenas_bounds_the_arenas_of_twelve_threads() -> None:
    """Without the limit twelve threads make more than two arenas (glibc's default allows 8 per
    core); with `limit_arenas(2)` before they start, at most two."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's arenas")
    unlimited = arenas(0)
    limited = arenas(2)
    assert unlimited[0] == "set: False"
    assert unlimited[1] > 2
    assert limited == ("set: True", 2)
