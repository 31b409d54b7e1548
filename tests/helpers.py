"""What the tests share: the admin token, configs and blobs, waiting, requests (whole and raw),
the disk tier's files, the bench's rendered reports and process memory.

Fixtures are in `tests/conftest.py` (`app_client` serves an app as `python -m imgproxy` does);
servers, fakes and processes in `tests/support/`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import StrOrURL
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient
from multidict import CIMultiDictProxy
from yarl import URL

from bench.render import render
from bench.report import Report
from bench.wrk import WrkResult
from devtools.azurite import connection_string
from devtools.processes import peak_rss_bytes as peak_rss_bytes  # shared with the bench
from imgproxy.config import Config, load_config
from imgproxy.web.keys import FETCHER

MIB: Final = 1024 * 1024

AppClient = TestClient[web.Request, web.Application]


class AppClientFactory(Protocol):
    """The `app_client` fixture: `await app_client(**features)` (see `tests/conftest.py`)."""

    def __call__(self, **features: Any) -> Awaitable[AppClient]: ...


# --- the admin API ------------------------------------------------------------------------------

ADMIN_TOKEN: Final = "test-admin-token"


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    """The header that authorizes a request to the admin API with `token`."""
    return {"Authorization": f"Bearer {token}"}


AUTH: Final = admin_headers()  # for an app of `make_test_config` (its token is ADMIN_TOKEN)

# --- configs and blobs --------------------------------------------------------------------------


def make_test_config(endpoint: str, container_name: str, **overrides: Any) -> Config:
    """Config pointing at `endpoint`; overrides are `section__key=value`."""
    env = {
        "IMGPROXY_ORIGIN_CONNECTION_STRING": connection_string(endpoint),
        "IMGPROXY_ORIGIN_CONTAINER": container_name,
        "IMGPROXY_ORIGIN_TIMEOUT_S": "5",
        "IMGPROXY_ORIGIN_RETRY_BACKOFF_S": "0.01",
        "IMGPROXY_ORIGIN_READY_CHECK_INTERVAL_S": "0",
        "IMGPROXY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    config = load_config(None, env)
    sections: dict[str, dict[str, Any]] = {}
    for name, value in overrides.items():
        section, key = name.split("__")
        sections.setdefault(section, {})[key] = value
    for section, values in sections.items():
        config = dataclasses.replace(
            config, **{section: dataclasses.replace(getattr(config, section), **values)}
        )
    return config


async def upload(container: ContainerClient, name: str, data: bytes, content_type: str = "image/png") -> None:
    """Put a blob straight into Azurite (not through the counting proxy)."""
    # A BytesIO: aiohttp warns (an error here) about large raw bytes bodies.
    await container.upload_blob(
        name,
        io.BytesIO(data),
        length=len(data),
        overwrite=True,
        content_settings=ContentSettings(content_type=content_type),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes of `size` (a different seed gives different bytes)."""
    return random.Random(seed).randbytes(size)


# --- waiting ------------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Yield to the event loop until `condition()` holds (the app runs in this same loop).

    For conditions on the app's plain counters, which have no event to wait on; bounded.
    """
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - see docstring
            await asyncio.sleep(0.001)


POLL_INTERVAL_S: Final = 0.005


async def poll(condition: Callable[[], Awaitable[bool]], bound_s: float, what: str) -> float:
    """Ask until `condition()` holds (another process: no event to wait on); seconds it took.

    Raises AssertionError naming `what` if it does not hold within `bound_s`.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(bound_s):
            while not await condition():  # noqa: ASYNC110 - another process: no event (see docstring)
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {bound_s} s") from None
    return time.perf_counter() - started


# --- requests -----------------------------------------------------------------------------------

REQUEST_TIMEOUT_S: Final = 30.0  # every request of these helpers is bounded (a test has 300 s)

Http = AppClient | aiohttp.ClientSession  # an app's test client (paths) or a session (URLs)
Answer = tuple[int, CIMultiDictProxy[str], bytes]  # status, headers, body
ImageAnswer = tuple[int, str, bytes]  # status, X-Cache ("" if none), body


async def fetch(http: Http, url: StrOrURL, method: str = "GET", **headers: str) -> Answer:
    """`method url` with `headers`, the answer read whole: status, headers and body."""
    return await _fetch(http, url, method, headers)


async def _fetch(http: Http, url: StrOrURL, method: str, headers: Mapping[str, str]) -> Answer:
    async with asyncio.timeout(REQUEST_TIMEOUT_S), http.request(method, url, headers=headers) as response:
        return response.status, response.headers, await response.read()


async def fetch_image(http: Http, name: str, base: str = "", **headers: str) -> ImageAnswer:
    """GET `base`/images/`name` (`base`: a server's URL, for a session): status, X-Cache and body."""
    status, answer, body = await _fetch(http, f"{base}/images/{name}", "GET", headers)
    return status, answer.get("X-Cache", ""), body


async def fetch_ok(http: Http, url: StrOrURL) -> bytes:
    """The body of a 200 answer to GET `url`."""
    status, _, body = await fetch(http, url)
    assert status == 200, body[:200]
    return body


async def x_cache(http: Http, url: StrOrURL) -> str:
    """The X-Cache of a 200 answer to GET `url` (its body read)."""
    status, headers, body = await fetch(http, url)
    assert status == 200, body[:200]
    return headers["X-Cache"]


async def stream_digest(http: Http, url: StrOrURL) -> tuple[int, str]:
    """GET `url`, its body hashed as it arrives, never held whole: status and SHA-256 (hex). Not
    bounded by REQUEST_TIMEOUT_S: it is for large bodies (give the session a timeout)."""
    digest = hashlib.sha256()
    async with http.get(url) as response:
        async for chunk in response.content.iter_chunked(MIB):
            digest.update(chunk)
        return response.status, digest.hexdigest()


async def cache_stats(http: Http, base: str = "", token: str = ADMIN_TOKEN) -> dict[str, Any]:
    """GET /admin/cache: the figures of the cache (a 200 answer)."""
    status, _, body = await _fetch(http, f"{base}/admin/cache", "GET", admin_headers(token))
    assert status == 200, body[:200]
    figures: dict[str, Any] = json.loads(body)
    return figures


def base_url(client: AppClient) -> str:
    """The client's server, as a URL without a trailing slash (to append raw targets to)."""
    return str(client.make_url("/")).rstrip("/")


def raw_url(base: str, raw_target: str) -> URL:
    """`base` + `raw_target` exactly as written: no '..' resolution, no re-encoding."""
    return URL(base + raw_target, encoded=True)


async def fetch_raw(
    client: TestClient[Any, Any], raw_target: str, method: str = "GET", **headers: str
) -> Answer:
    """`fetch` of `raw_target` exactly as written (the test client would resolve '..' segments)."""
    return await _fetch(client.session, raw_url(base_url(client), raw_target), method, headers)


# --- raw requests: bytes on a socket -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """One HTTP/1.x answer as it came: the status line, the header fields in order, the body."""

    status_line: str  # "HTTP/1.1 200 OK"
    fields: list[tuple[str, str]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ")[1])

    @property
    def headers(self) -> dict[str, str]:
        """The fields by lower-case name (the last value of a repeated one)."""
        return {name.lower(): value for name, value in self.fields}

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """One client connection, written and read byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str, rcvbuf: int | None = None, limit: int = 2**20) -> RawClient:
        """Connect to `base`'s host and port; `rcvbuf`: the socket's receive buffer; `limit`: the
        reader's buffer (asyncio's default is 64 KiB)."""
        url = URL(base)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(self, timeout_s: float = 10) -> tuple[str, list[tuple[str, str]]]:
        """The next answer's status line and header fields."""
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout_s)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        fields = []
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                fields.append((name.strip(), value.strip()))
        return status_line, fields

    async def head(self, timeout_s: float = 10) -> tuple[int, dict[str, str]]:
        """The next answer's status and headers (lower-case names), its body left unread."""
        status_line, fields = await self.read_head(timeout_s)
        answer = RawAnswer(status_line, fields, b"")
        return answer.status, answer.headers

    async def answer(self, timeout_s: float = 10) -> RawAnswer:
        """The next answer, its body framed by its Content-Length (none: empty)."""
        status_line, fields = await self.read_head(timeout_s)
        length = int(RawAnswer(status_line, fields, b"").headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout_s)
        return RawAnswer(status_line, fields, body)

    async def until_closed(self, timeout_s: float = 10) -> bytes:
        """Everything until the server closes the connection (or resets it)."""
        chunks = []
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await self.reader.read(65536):
                    chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


async def raw_answer(base: str, request: bytes) -> RawAnswer:
    """Send `request` (bytes) on a new connection to `base`; its first answer."""
    client = await RawClient.open(base)
    try:
        await client.send(request)
        return await client.answer()
    finally:
        client.close()


async def raw_exchange(base: str, request: bytes, timeout_s: float = 10) -> bytes:
    """Send `request` (bytes) on a new connection to `base`; all that comes back until the server
    closes the connection (a reset is an error)."""
    client = await RawClient.open(base)
    try:
        await client.send(request)
        return await asyncio.wait_for(client.reader.read(), timeout_s)
    finally:
        client.close()


# --- the disk tier's files ----------------------------------------------------------------------


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def data_files(root: Path) -> list[Path]:
    """The entries' data files (not their metadata, temporaries or lock files, nor files kept at the
    top of the directory, such as the purge log's cursor)."""
    return [
        p for p in files_under(root) if p.parent != root and not p.name.endswith((".meta", ".tmp", ".lock"))
    ]


async def settled(client: AppClient, entries: int) -> None:
    """Wait until `entries` are on disk and no fill or write is under way."""
    fetcher = client.app[FETCHER]
    await wait_until(
        lambda: fetcher.disk_stats()["disk_size"] == entries and not fetcher.disk_stats()["disk_fills"]
    )


# --- the bench's reports, rendered ---------------------------------------------------------------


def wrk(
    rps: float, p50_ms: float = 1.0, p99_ms: float = 4.0, errors: int = 0, mean_ms: float | None = None
) -> WrkResult:
    """A 10 s wrk run at `rps` with these latencies (p90 = p50, p99.9 = max = p99; mean: p50)."""
    return WrkResult(
        requests=int(rps * 10),
        wire_bytes=0,
        duration_s=10.0,
        errors=errors,
        p50_ms=p50_ms,
        p90_ms=p50_ms,
        p99_ms=p99_ms,
        p999_ms=p99_ms,
        mean_ms=p50_ms if mean_ms is None else mean_ms,
        max_ms=p99_ms,
        raw="",
    )


def as_written(report: Report) -> dict[str, Any]:
    """`report` as the bench writes it (through JSON): what its renderer reads."""
    data: dict[str, Any] = json.loads(json.dumps(report.as_dict()))
    return data


def rendered(report: Report) -> str:
    """`report`'s Markdown, rendered from what the bench writes."""
    return render(as_written(report))


def section(text: str, title: str) -> str:
    """The part of a rendered report under `## title`."""
    return text.split(f"## {title}\n")[1].split("\n## ")[0]


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the first table row of `text` that starts with `first_cell`."""
    line = next(x for x in text.splitlines() if x.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


# --- process memory -----------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (VmRSS), from the kernel."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def reset_peak_rss() -> None:
    """Reset this process's high-water mark (VmHWM, `peak_rss_bytes`) to its resident memory now."""
    Path("/proc/self/clear_refs").write_text("5")
