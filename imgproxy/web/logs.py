"""How a process logs: `server.log_format` "text" (the line it always was) or "json" (one object a line).

`configure_logging` sets up the root logger on stderr for the CLI, the same in every worker (each
is `python -m imgproxy` with the same configuration, and its index). JSON lines are formatted by
python-json-logger: `time` (ISO 8601, UTC), `level`, `logger`, `message`, `worker` (the worker's
index; 0 for a single process, null for the supervisor), `request_id` for any line logged while a
request is served, and whatever a line's `extra` adds (the access log's fields: `access_log`).
"""

from __future__ import annotations

import logging
from typing import IO, Final

from pythonjsonlogger.json import JsonFormatter

from imgproxy.config import ServerConfig
from imgproxy.core.request_context import current_id

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives a record logged while a request is served that request's id (`request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_id()
            if request_id is not None:
                record.request_id = request_id
        return True


def json_formatter(worker: int | None) -> JsonFormatter:
    """The JSON lines' formatter: time, level, logger and message first, then the record's extras."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        timestamp="time",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"worker": worker},
    )


def log_handler(config: ServerConfig, worker: int | None, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to `stream` (stderr) in `config.log_format`."""
    handler = logging.StreamHandler(stream)
    if config.log_format == "json":
        handler.setFormatter(json_formatter(worker))
        handler.addFilter(RequestIdFilter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(config: ServerConfig, worker: int | None) -> None:
    """The root logger at INFO through `log_handler` on stderr; the Azure SDK's and libvips' INFO
    messages muted."""
    logging.basicConfig(level=logging.INFO, handlers=[log_handler(config, worker)])
    # The SDK logs every request and response at INFO: far too much for a request path; libvips
    # (through pyvips) reports each operation's plan at INFO: eight lines per transform.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("pyvips").setLevel(logging.WARNING)
