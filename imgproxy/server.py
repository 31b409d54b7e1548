"""The server: one process serving `create_app`'s application until told to stop, or a supervisor
of several such workers.

Shutdown: on SIGTERM the server first reports not-ready on `/readyz` for `server.drain_s` (load
balancers stop sending traffic), then closes its listener and lets in-flight responses finish
for up to `server.shutdown_timeout_s`, then exits 0. SIGINT (Ctrl-C) skips the drain.

With `server.workers` > 1 a supervisor runs that many worker processes bound to the same port with
SO_REUSEPORT (the kernel spreads connections); it forwards SIGTERM/SIGINT to them and exits 0 when
they all did. Each worker has its own memory cache and coalescing; with the disk tier they share
its directory (cleaned once by the supervisor), each evicting within an equal share of
`disk.max_bytes`, and coalesce through per-entry lock files, so that N workers still make one
origin download of a blob. Each worker also listens on a Unix socket in a private directory the
supervisor makes, so that an admin purge received by one worker reaches the others (`siblings`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from typing import Any, Final

from aiohttp import web

from imgproxy.app import create_app
from imgproxy.config import Config
from imgproxy.core.allocator import worker_environment
from imgproxy.web.access_log import JsonAccessLogger
from imgproxy.web.frontdoor import FrontDoor, FrontDoorRunner
from imgproxy.web.keys import CONFIG, METRICS, READINESS
from imgproxy.web.lanes import install_lanes
from imgproxy.web.siblings import Siblings

log = logging.getLogger("imgproxy")


class ImgproxyRunner(FrontDoorRunner):
    """The server of an app as `python -m imgproxy` runs it: every connection through the front
    door (`web.frontdoor`), and once set up the lanes ahead of the router (`web.lanes`). Tests
    serve their apps with it too, so they see the server production runs."""

    async def setup(self) -> None:
        await super().setup()
        install_lanes(self)


def make_runner(app: web.Application, **runner_kwargs: Any) -> ImgproxyRunner:
    """`app`'s server, not set up yet: the shutdown timeout and the access log from its config
    (`server.shutdown_timeout_s`, `server.access_log`, `server.log_format`); `runner_kwargs`
    (aiohttp's `AppRunner`'s) win over them."""
    config = app[CONFIG]
    door = FrontDoor(config)
    app[METRICS].watch_frontdoor(door.stats)
    kwargs: dict[str, Any] = {
        "shutdown_timeout": config.server.shutdown_timeout_s,
        "access_log": logging.getLogger("aiohttp.access") if config.server.access_log else None,
        **runner_kwargs,
    }
    if config.server.log_format == "json":  # the access log's fields as JSON (`web.access_log`)
        kwargs.setdefault("access_log_class", JsonAccessLogger)
    return ImgproxyRunner(app, door, **kwargs)


async def start_runner(app: web.Application, **runner_kwargs: Any) -> ImgproxyRunner:
    """`make_runner`, set up (sites not started yet)."""
    runner = make_runner(app, **runner_kwargs)
    await runner.setup()
    return runner


def begin_drain(app: web.Application) -> None:
    """From now on /readyz answers 503 (graceful shutdown has begun)."""
    app[READINESS].draining = True


async def serve(
    config: Config, reuse_port: bool = False, shared_disk: bool = False, siblings: Siblings | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    # The handlers first: a signal during start-up (a disk scan, catching up on purges) must end
    # in the same orderly shutdown, not in the default action's death by the signal.
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    drain = False

    def stop(with_drain: bool) -> None:
        nonlocal drain
        drain = drain or with_drain
        stopping.set()

    loop.add_signal_handler(signal.SIGTERM, stop, True)
    loop.add_signal_handler(signal.SIGINT, stop, False)
    app = create_app(config, shared_disk=shared_disk, siblings=siblings)
    runner = await start_runner(app)
    tune_gc()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=reuse_port or None)
        await site.start()
        if siblings is not None:  # where sibling workers relay purges
            await web.UnixSite(runner, str(siblings.socket(siblings.index))).start()
        log.info("serving on http://%s:%d", config.server.host, config.server.port)
        await stopping.wait()
        if drain and config.server.drain_s > 0:
            log.info("SIGTERM: not ready; draining for %.1f s", config.server.drain_s)
            begin_drain(app)
            await asyncio.sleep(config.server.drain_s)  # the drain period itself, not a synchronisation
        log.info("shutting down (in-flight responses get up to %.0f s)", config.server.shutdown_timeout_s)
    finally:
        await runner.cleanup()


GC_YOUNG_THRESHOLD: Final = 10_000  # allocations between young collections (CPython's default: 700)


def tune_gc() -> None:
    """Collect less often: what is alive after start-up is frozen out of every collection, and the
    young generation is collected every `GC_YOUNG_THRESHOLD` allocations instead of 700.

    A request allocates a few dozen short-lived containers; with the defaults the collector ran
    every ~60 requests over every object still alive (modules, the SDK, in-flight requests):
    about 6 us a request in front of an app, a seventh of its CPU (measured with `gc.callbacks`:
    0.58 s of collections in a 6 s, 88k-request run, 0.03 s after this). Cyclic garbage waits
    longer for its collection, a few thousand objects at most; refcounting frees the rest as before.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (it is a dependency on Linux), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - other platforms
        asyncio.run(main)
    else:
        uvloop.run(main)


def worker_config(config: Config) -> Config:
    """A worker's config: its share of the disk budget (the directory is shared)."""
    disk = config.disk
    if not disk.enabled:
        return config
    share = dataclasses.replace(disk, max_bytes=max(1, disk.max_bytes // config.server.workers))
    return dataclasses.replace(config, disk=share)


def supervise(argv: list[str], workers: int, malloc_arena_max: int = 0) -> int:
    """Start `workers` worker processes, forward stop signals, exit 0 if they all did. The workers'
    environment carries the allocator's settings (`core.allocator`), read by the C library at start."""
    sockets = tempfile.mkdtemp(prefix="imgproxy-workers-")  # mode 0700: the workers' relay sockets
    try:
        return _supervise(argv, workers, sockets, worker_environment(os.environ, malloc_arena_max))
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _supervise(argv: list[str], workers: int, sockets: str, env: dict[str, str]) -> int:
    worker_argv = [sys.executable, "-m", "imgproxy", *argv, "--siblings", sockets, "--worker"]
    procs = [subprocess.Popen([*worker_argv, str(index)], env=env) for index in range(workers)]

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    return 0 if all(code == 0 for code in codes) else 1
