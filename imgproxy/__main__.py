"""Command line: `python -m imgproxy --config PATH` (also the `imgproxy` console script).

Shutdown: on SIGTERM the server first reports not-ready on `/readyz` for `server.drain_s` (load
balancers stop sending traffic), then closes its listener and lets in-flight responses finish
for up to `server.shutdown_timeout_s`, then exits 0. SIGINT (Ctrl-C) skips the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from .app import begin_drain, create_app
from .config import Config, ConfigError, load_config

log = logging.getLogger("imgproxy")


async def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=config.server.shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        log.info("serving on http://%s:%d", config.server.host, config.server.port)

        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        drain = False

        def stop(with_drain: bool) -> None:
            nonlocal drain
            drain = drain or with_drain
            stopping.set()

        loop.add_signal_handler(signal.SIGTERM, stop, True)
        loop.add_signal_handler(signal.SIGINT, stop, False)
        await stopping.wait()
        if drain and config.server.drain_s > 0:
            log.info("SIGTERM: not ready; draining for %.1f s", config.server.drain_s)
            begin_drain(app)
            await asyncio.sleep(config.server.drain_s)  # the drain period itself, not a synchronisation
        log.info("shutting down (in-flight responses get up to %.0f s)", config.server.shutdown_timeout_s)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the configuration and serve until stopped."""
    parser = argparse.ArgumentParser(prog="imgproxy", description="Serve Azure blobs through a cache.")
    parser.add_argument("--config", type=Path, default=None, help="path to config.toml")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"imgproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The SDK logs every request and response at INFO: far too much for a request path.
    logging.getLogger("azure").setLevel(logging.WARNING)
    asyncio.run(serve(config))
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
