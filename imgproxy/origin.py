"""The origin: Azure Blob Storage through the async SDK. The only module that imports `azure.*`.

One `BlobServiceClient` is opened for the life of the app (`open_origin`). Every call is bounded
by `origin.timeout_s` (the SDK's retries included) and every Azure or transport exception is
translated into a project error by `_translate`, on the first request and on every chunk.

Memory: a whole-blob read (`fetch`) is one GET of at most `cache.max_item_bytes` (the client's
`max_single_get_size`); a blob larger than that comes back as `TooLarge` with its metadata and
the bytes that first GET already moved (`head`), so that a stream or disk fill can start after them.
Large blobs are read by `iter_range` as a series of ranged GETs of `origin.download_chunk_bytes`,
each pinned to the ETag the response headers announced, with one chunk fetched ahead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineRequest
from azure.storage.blob.aio import BlobServiceClient, ContainerClient, LinearRetry, StorageStreamDownloader

from imgproxy.config import OriginConfig
from imgproxy.core.blob import BlobMeta
from imgproxy.core.breaker import CircuitBreaker
from imgproxy.core.errors import (
    BlobChanged,
    BlobNotFound,
    CircuitOpen,
    IncompleteBody,
    OriginBusy,
    OriginError,
    OriginTimeout,
    OriginUnavailable,
)
from imgproxy.core.request_context import current, current_id
from imgproxy.core.stats import OriginStats
from imgproxy.core.tracing import SpanKind, Tracer

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Blob:
    """A whole blob read into memory."""

    meta: BlobMeta
    body: bytes


@dataclass(frozen=True, slots=True)
class NotModified:
    """A revalidation found the blob unchanged."""


NOT_MODIFIED: Final = NotModified()


@dataclass(frozen=True, slots=True)
class TooLarge:
    """The blob exceeds the whole-read limit: its metadata and the first bytes already read."""

    meta: BlobMeta
    head: bytes


class Origin:
    """Reads blobs of one container, admitting calls through a breaker and a bounded queue."""

    def __init__(
        self, container: ContainerClient, config: OriginConfig, tracer: Tracer | None = None
    ) -> None:
        self._container = container
        self._config = config
        self._tracer = tracer  # None: tracing off
        self._breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._queued = 0
        self._in_flight = 0
        self._shed = 0

    @property
    def container_name(self) -> str:
        return self._config.container

    @property
    def chunk_bytes(self) -> int:
        """The size of each ranged GET (`origin.download_chunk_bytes`)."""
        return self._config.download_chunk_bytes

    async def fetch(
        self, path: str, limit: int, if_none_match: str | None = None
    ) -> Blob | TooLarge | NotModified:
        """Read a blob whole if it has at most `limit` bytes (one GET), else return `TooLarge`.

        With `if_none_match` (an ETag) this is a revalidation: an unchanged blob answers
        `NotModified` after one bodiless 304 from Azure.
        """
        blob = self._container.get_blob_client(path)
        conditions: dict[str, Any] = {}
        if if_none_match is not None:
            conditions = {"etag": if_none_match, "match_condition": MatchConditions.IfModified}
        async with self._call(path, "GetBlob"):
            try:
                downloader = await blob.download_blob(max_concurrency=1, **conditions)
            except (ResourceNotModifiedError, ResourceModifiedError) as exc:
                if exc.status_code != 304:
                    raise
                return NOT_MODIFIED
            meta = _meta_from(downloader)
            if meta.size > limit:
                # The first GET already moved `limit` bytes: keep them rather than read them again.
                head = await downloader.read(limit)
                if len(head) != limit:
                    raise IncompleteBody(f"{path}: first GET gave {len(head)} of {limit} bytes")
                return TooLarge(meta, head)
            body = await downloader.readall()
        _verify(path, meta, body)
        return Blob(meta, body)

    async def properties(self, path: str, if_none_match: str) -> BlobMeta | NotModified:
        """Metadata only (one HEAD): `NotModified` if the blob still has ETag `if_none_match`."""
        blob = self._container.get_blob_client(path)
        async with self._call(path, "GetBlobProperties"):
            try:
                props = await blob.get_blob_properties(
                    etag=if_none_match, match_condition=MatchConditions.IfModified
                )
            except (ResourceNotModifiedError, ResourceModifiedError) as exc:
                # The SDK raises ResourceModifiedError for a 304 too (its error code is ConditionNotMet).
                if exc.status_code != 304:
                    raise
                return NOT_MODIFIED
        md5: Any = props.content_settings.content_md5
        return BlobMeta(
            size=props.size,
            etag=_quoted(str(props.etag)),
            last_modified=props.last_modified or datetime.fromtimestamp(0, UTC),
            content_type=props.content_settings.content_type or DEFAULT_CONTENT_TYPE,
            content_md5=_md5_bytes(md5),
        )

    async def iter_range(
        self, path: str, meta: BlobMeta, start: int, end: int
    ) -> AsyncGenerator[bytes, None]:
        """Yield bytes `start..end` (inclusive) of the blob version `meta` describes.

        Raises `BlobChanged` if the blob was overwritten since `meta` was read. Close the iterator
        (`contextlib.aclosing`) to cancel the chunk fetched ahead.
        """
        chunk_bytes = self._config.download_chunk_bytes
        blob = self._container.get_blob_client(path)

        async def get(offset: int) -> bytes:
            length = min(chunk_bytes, end + 1 - offset)
            async with self._call(path, "GetBlobRange"):
                downloader = await blob.download_blob(
                    offset=offset,
                    length=length,
                    etag=meta.etag,
                    match_condition=MatchConditions.IfNotModified,
                    max_concurrency=1,
                )
                data = await downloader.readall()
            if len(data) != length:
                raise IncompleteBody(f"{path}: asked for {length} bytes at {offset}, got {len(data)}")
            return data

        offset = start
        ahead: asyncio.Task[bytes] | None = asyncio.create_task(get(offset)) if start <= end else None
        try:
            while ahead is not None:
                data = await ahead
                offset += len(data)
                ahead = asyncio.create_task(get(offset)) if offset <= end else None
                yield data
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead

    async def check(self) -> None:
        """A cheap request proving the container is reachable (readiness)."""
        async with self._call("", "GetContainerProperties"):
            await self._container.get_container_properties()

    def stats(self) -> OriginStats:
        """Connection slots in use, callers queued for one, and the breaker's state."""
        return OriginStats(
            in_flight=self._in_flight,
            queued=self._queued,
            shed=self._shed,
            breaker_open=self._breaker.is_open(),
            breaker_opened=self._breaker.opened_count,
        )

    def is_refusing(self) -> bool:
        """True while the circuit breaker refuses calls."""
        return self._breaker.is_open()

    @asynccontextmanager
    async def _call(self, path: str, operation: str) -> AsyncIterator[None]:
        """Admit one origin call (`operation`, Azure's name of it): breaker, then a bounded queue
        for a connection slot, then a timeout. Traced: one span per call (the SDK's retries inside)."""
        if self._tracer is None:
            async with self._admitted(path):
                yield
            return
        attributes = {"az.operation": operation, "az.container": self._config.container, "az.blob": path}
        with self._tracer.span(f"azure {operation}", SpanKind.CLIENT, attributes, only_in_trace=True):
            async with self._admitted(path):
                yield

    @asynccontextmanager
    async def _admitted(self, path: str) -> AsyncIterator[None]:
        try:
            self._breaker.before_call()
        except CircuitOpen:
            self._shed += 1
            raise
        try:
            await self._take_slot()
        except BaseException:
            self._breaker.abandoned()
            raise
        self._in_flight += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._config.timeout_s):
                with _translate(path):
                    yield
        except TimeoutError:
            self._breaker.failed()
            raise OriginTimeout(f"no answer within {self._config.timeout_s:g} s") from None
        except (BlobNotFound, BlobChanged):
            self._breaker.succeeded()  # Azure answered; the answer was just unwelcome
            raise
        except OriginError:
            self._breaker.failed()
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        else:
            self._breaker.succeeded()
        finally:
            self._in_flight -= 1
            self._slots.release()
            if (context := current()) is not None:  # the access log's origin_ms
                context.origin_s += time.monotonic() - started

    async def _take_slot(self) -> None:
        """Wait for one of origin.max_concurrency slots, or shed if origin.max_queue already wait."""
        if self._slots.locked() and self._queued >= self._config.max_queue:
            self._shed += 1
            raise OriginBusy(1.0)
        self._queued += 1
        try:
            async with asyncio.timeout(self._config.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            self._shed += 1
            raise OriginBusy(1.0) from None
        finally:
            self._queued -= 1


@contextlib.contextmanager
def _translate(path: str) -> Iterator[None]:
    """Map Azure and transport exceptions to project errors, most specific first."""
    try:
        yield
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise OriginUnavailable("container not found") from exc
        raise BlobNotFound(path) from exc
    except ResourceModifiedError as exc:
        raise BlobChanged(path) from exc
    except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as exc:
        raise OriginTimeout(str(exc) or "transport timeout") from exc
    except DecodeError as exc:
        raise IncompleteBody(f"{path}: {exc}") from exc
    except ClientAuthenticationError as exc:
        raise OriginUnavailable(f"authentication failed ({exc.status_code})") from exc
    except HttpResponseError as exc:
        if exc.status_code is None:  # e.g. a body cut short: no status to report
            raise OriginUnavailable(f"{type(exc).__name__}: {exc.message}") from exc
        raise OriginUnavailable(f"origin answered {exc.status_code}") from exc
    except AzureError as exc:
        raise OriginUnavailable(type(exc).__name__) from exc
    except OSError as exc:  # a transport error the SDK let through
        raise OriginUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # the SDK's word for a malformed response (e.g. no Content-Range)
        raise OriginUnavailable(f"malformed origin response: {exc}") from exc


def _meta_from(downloader: StorageStreamDownloader[bytes]) -> BlobMeta:
    props = downloader.properties
    # content_range reads "bytes a-b/total": total is the size of the whole blob.
    total = int(str(props.content_range).rsplit("/", 1)[-1]) if props.content_range else downloader.size
    settings = props.content_settings
    modified = props.last_modified or datetime.fromtimestamp(0, UTC)
    return BlobMeta(
        size=total,
        etag=_quoted(str(props.etag)),
        last_modified=modified,
        content_type=settings.content_type or DEFAULT_CONTENT_TYPE,
        content_md5=_md5_bytes(settings.content_md5),
    )


def _md5_bytes(md5: Any) -> bytes | None:
    """The SDK gives the stored MD5 as bytes, bytearray or base64 text depending on the call."""
    if not md5:
        return None
    if isinstance(md5, str):
        return base64.b64decode(md5)
    return bytes(md5)


def _quoted(etag: str) -> str:
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def _verify(path: str, meta: BlobMeta, body: bytes) -> None:
    """Refuse a body whose length or stored MD5 does not match what Azure announced."""
    if len(body) != meta.size:
        raise IncompleteBody(f"{path}: expected {meta.size} bytes, got {len(body)}")
    if meta.content_md5 is not None and hashlib.md5(body).digest() != meta.content_md5:
        raise IncompleteBody(f"{path}: body does not match its Content-MD5")


def _tag_request(request: PipelineRequest[Any]) -> None:
    """The SDK's `raw_request_hook`, run for every try after it set its own random
    `x-ms-client-request-id`: the request's id instead, so a line of Azure's storage log names it.
    (The SDK's per-call `client_request_id=` is used on the first try only.)"""
    request_id = current_id()
    if request_id is not None:
        request.http_request.headers["x-ms-client-request-id"] = request_id


def _retry_policy(config: OriginConfig) -> LinearRetry:
    # The SDK default waits ~15 s, 18 s, 24 s between tries: far too slow for a request path.
    # The overall bound is origin.timeout_s, enforced around every call by Origin._call.
    backoff = config.retry_backoff_s
    return LinearRetry(
        backoff=backoff,  # type: ignore[arg-type]  # the SDK annotates int but uses floats fine
        retry_total=config.retries,
        random_jitter_range=backoff / 2,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def open_origin(
    config: OriginConfig, max_whole_bytes: int, tracer: Tracer | None = None
) -> AsyncIterator[Origin]:
    """Open the one `BlobServiceClient` of the app and close it (and its credential) on exit."""
    options: dict[str, Any] = {
        "retry_policy": _retry_policy(config),
        "connection_timeout": config.connect_timeout_s,
        "read_timeout": config.timeout_s,
        # One GET reads any blob we may cache whole; larger ones are streamed in ranges.
        "max_single_get_size": max(max_whole_bytes, 1),
        "max_chunk_get_size": config.download_chunk_bytes,
        "raw_request_hook": _tag_request,
    }
    async with contextlib.AsyncExitStack() as stack:
        if config.connection_string:
            client = BlobServiceClient.from_connection_string(config.connection_string, **options)
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = await stack.enter_async_context(DefaultAzureCredential())
            client = BlobServiceClient(config.account_url, credential=credential, **options)
        await stack.enter_async_context(client)
        yield Origin(client.get_container_client(config.container), config, tracer)
