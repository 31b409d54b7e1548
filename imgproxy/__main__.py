"""Command line: `python -m imgproxy --config PATH` (also the `imgproxy` console script).

`python -m imgproxy sign PATH 'w=300&fm=webp'` prints a signed `/images/...` path and query (the
key from `--key`, else `IMGPROXY_TRANSFORM_SIGNING_KEY`, else `transform.signing_key` in the
`--config` file); it starts no server.

Shutdown: on SIGTERM the server first reports not-ready on `/readyz` for `server.drain_s` (load
balancers stop sending traffic), then closes its listener and lets in-flight responses finish
for up to `server.shutdown_timeout_s`, then exits 0. SIGINT (Ctrl-C) skips the drain.

With `server.workers` > 1 this process supervises that many worker processes bound to the same
port with SO_REUSEPORT (the kernel spreads connections); it forwards SIGTERM/SIGINT to them and
exits 0 when they all did. Each worker has its own memory cache and coalescing; with the disk
tier they share its directory (cleaned once by the supervisor), each evicting within an equal share
of `disk.max_bytes`, and coalesce through per-entry lock files, so that N workers still make one
origin download of a blob. Each worker also listens on a Unix socket in a private directory the
supervisor makes, so that an admin purge received by one worker reaches the others (`siblings`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from imgproxy.app import begin_drain, create_app, start_runner
from imgproxy.cache.disk.tier import clean_disk
from imgproxy.config import Config, ConfigError, load_config, load_transform_config
from imgproxy.core.errors import BadTransformParameter
from imgproxy.transform.params import QueryParser, check_presets
from imgproxy.transform.signing import sign_url
from imgproxy.web.siblings import Siblings

log = logging.getLogger("imgproxy")


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
    runner = await start_runner(
        app,
        shutdown_timeout=config.server.shutdown_timeout_s,
        access_log=logging.getLogger("aiohttp.access") if config.server.access_log else None,
    )
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


def supervise(argv: list[str], workers: int) -> int:
    """Start `workers` worker processes, forward stop signals, exit 0 if they all did."""
    sockets = tempfile.mkdtemp(prefix="imgproxy-workers-")  # mode 0700: the workers' relay sockets
    try:
        return _supervise(argv, workers, sockets)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _supervise(argv: list[str], workers: int, sockets: str) -> int:
    worker_argv = [sys.executable, "-m", "imgproxy", *argv, "--siblings", sockets, "--worker"]
    procs = [subprocess.Popen([*worker_argv, str(index)]) for index in range(workers)]

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    return 0 if all(code == 0 for code in codes) else 1


def sign_main(argv: list[str]) -> int:
    """`imgproxy sign PATH PARAMS`: print the signed path and query; 2 on a missing key or bad value."""
    parser = argparse.ArgumentParser(prog="imgproxy sign", description="Print a signed transform URL.")
    parser.add_argument(
        "path", help="the blob path as stored, e.g. 'photos/my cat.jpg' (percent-encoded here)"
    )
    parser.add_argument("params", help="transform parameters as they go in the URL, e.g. 'w=300&fm=webp'")
    parser.add_argument(
        "--key", default="", help="signing key (else IMGPROXY_TRANSFORM_SIGNING_KEY, else --config)"
    )
    parser.add_argument("--config", type=Path, default=None, help="config.toml holding transform.signing_key")
    parser.add_argument("--base", default="", help="put before the path, e.g. https://img.example.com")
    args = parser.parse_args(argv)
    try:
        transform = load_transform_config(args.config)
        check_presets(transform)
    except ConfigError as exc:
        print(f"imgproxy sign: configuration error: {exc}", file=sys.stderr)
        return 2
    key = args.key or transform.signing_key
    if not key:
        print(
            "imgproxy sign: no key (--key, IMGPROXY_TRANSFORM_SIGNING_KEY or transform.signing_key)",
            file=sys.stderr,
        )
        return 2
    # Refuse to sign what the server would answer with a 400: read the parameters as it does.
    unsigned = QueryParser(dataclasses.replace(transform, signing_key="", allow_unsigned=True))
    try:
        unsigned.parse(args.path, args.params)
    except BadTransformParameter as exc:
        # The operator's own tool: the parameters are echoed (the server's 400 never echoes them).
        print(f"imgproxy sign: bad parameter {exc} in {args.params!r}", file=sys.stderr)
        return 2
    print(sign_url(args.base, args.path, args.params, key))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the configuration and serve until stopped (or `sign`, see above)."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["sign"]:
        return sign_main(arguments[1:])
    parser = argparse.ArgumentParser(prog="imgproxy", description="Serve Azure blobs through a cache.")
    parser.add_argument("--config", type=Path, default=None, help="path to config.toml")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--siblings", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(arguments)
    try:
        config = load_config(args.config)
        check_presets(config.transform)
    except ConfigError as exc:
        print(f"imgproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The SDK logs every request and response at INFO: far too much for a request path; libvips
    # (through pyvips) reports each operation's plan at INFO: eight lines per transform.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    workers = config.server.workers
    if workers > 1 and args.worker is None:
        if config.disk.enabled:
            discarded = clean_disk(config.disk, config.origin.container)
            log.info("disk tier at %s: %d incomplete entries discarded", config.disk.path, discarded)
        forwarded = ["--config", str(args.config)] if args.config is not None else []
        return supervise(forwarded, workers)
    siblings: Siblings | None = None
    if args.worker is not None:
        config = worker_config(config)
        if args.siblings is not None:
            siblings = Siblings(args.siblings, args.worker, workers)
    run(serve(config, reuse_port=workers > 1, shared_disk=args.worker is not None, siblings=siblings))
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
