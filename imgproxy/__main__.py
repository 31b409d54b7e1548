"""Command line: `python -m imgproxy --config PATH` (also the `imgproxy` console script)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from .app import create_app
from .config import ConfigError, load_config


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
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        print=lambda *_: logging.getLogger("imgproxy").info(
            "serving on http://%s:%d", config.server.host, config.server.port
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
