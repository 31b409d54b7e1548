"""Command line: `python -m imgproxy --config PATH` (also the `imgproxy` console script).

`python -m imgproxy sign PATH 'w=300&fm=webp'` prints a signed `/images/...` path and query (the
key from `--key`, else `IMGPROXY_TRANSFORM_SIGNING_KEY`, else `transform.signing_key` in the
`--config` file); it starts no server.

Serving, draining and the supervisor of several workers are `server`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from imgproxy.cache.disk.scan import clean_disk
from imgproxy.config import ConfigError, load_config, load_transform_config
from imgproxy.core.allocator import REEXEC_MARK, allocator_settings, limit_arenas, needs_reexec
from imgproxy.core.errors import BadTransformParameter
from imgproxy.server import run, serve, supervise, worker_config
from imgproxy.transform.params import QueryParser, check_presets
from imgproxy.transform.signing import sign_url
from imgproxy.web.logs import configure_logging
from imgproxy.web.siblings import Siblings

log = logging.getLogger("imgproxy")


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
    workers = config.server.workers
    # Every worker logs alike (the same configuration), with its index; null for the supervisor.
    supervisor = workers > 1 and args.worker is None
    configure_logging(config.server, None if supervisor else (args.worker or 0))
    if workers > 1 and args.worker is None:
        if config.disk.enabled:
            discarded = clean_disk(config.disk, config.origin.container)
            log.info("disk tier at %s: %d incomplete entries discarded", config.disk.path, discarded)
        forwarded = ["--config", str(args.config)] if args.config is not None else []
        return supervise(forwarded, workers, config.server.malloc_arena_max)
    arena_max = config.server.malloc_arena_max
    if needs_reexec(os.environ, arena_max):  # jemalloc reads MALLOC_CONF at start only: start again
        environ = {**os.environ, **allocator_settings(os.environ, arena_max), REEXEC_MARK: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "imgproxy", *arguments], environ)
    if limit_arenas(os.environ, arena_max):  # before the first thread (the transform pool, the SDK's)
        log.info("malloc: at most %d arenas (server.malloc_arena_max)", arena_max)
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
