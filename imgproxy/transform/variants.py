"""Variants: resized or re-encoded versions of an original, cached, coalesced and purged like one.

A variant's key is the blob path and its canonical name (the normalised options and the output
format bucket, never the raw `Accept`): N concurrent requests for one variant make one source
read and one transform (`Fetcher.find_variant` coalesces by key). The entry records the
ETag of the source it was made from; its own ETag is derived from that and the canonical name,
its `Last-Modified` is the source's, and its freshness follows the source's: a new variant
inherits the source's confirmation time, and an expired one is revalidated by asking whether the
source is still that version (from the tiers, or one conditional request), never by transforming
again. A purge of the path, or a revalidation that finds the source changed or gone, drops every
variant of it.

The source comes from the tiers as an original does: bytes in memory, a disk file (libvips opens
the open descriptor through /proc/self/fd, so an eviction meanwhile cannot swap the file), or a
stream from Azure read once into memory, bounded by `transform.max_src_bytes`.

`transform.auto_format` applies `fm=auto` to plain requests: compression, never a new failure.
Such a request gets the original whenever the variant cannot be made (not an image, too large,
the pool busy or slow), and the original itself when the negotiated format is the source's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from imgproxy.cache.fetcher import Fetcher
from imgproxy.cache.representation import Found, Opened
from imgproxy.config import TransformConfig
from imgproxy.core.blob import BlobMeta, Entry, variant_key
from imgproxy.core.errors import BlobNotFound, ImgproxyError, NotAnImage, TransformError
from imgproxy.core.lru import LRU
from imgproxy.http.content_policy import is_inert_image
from imgproxy.http.paths import parse_blob_path_cached
from imgproxy.transform.hints import hint_rung, takes_hints, with_width
from imgproxy.transform.negotiate import FormatBucket, negotiate
from imgproxy.transform.params import QueryParser, TransformOptions, apply_auto_format
from imgproxy.transform.result import CONTENT_TYPES, SOURCE_FAMILY, Source

if TYPE_CHECKING:  # the pool (and pyvips behind it) loads only when transforms are on
    from imgproxy.transform.pool import TransformPool

log = logging.getLogger(__name__)

# Content types the source itself answers for format-only options that resolve to its own format.
_OWN_FORMAT: Final = frozenset(CONTENT_TYPES[image_format] for image_format in SOURCE_FAMILY)
_FAMILY_BUCKETS: Final = frozenset({FormatBucket.SOURCE, FormatBucket.ORIGINAL})
UNDECODABLE_MAX_ITEMS: Final = 10_000  # source versions remembered as not an image
HOT_MEMO_ITEMS: Final = 4096  # (path, query) pairs the hot path remembers
# Longer pairs (those of hits are a few hundred characters at most) are parsed each time, not
# remembered: 4,096 keys of 512 characters and their answers (the path, and a key per output
# format: three at most) stay under about 10 MiB with Python's overhead.
HOT_MEMO_MAX_CHARS: Final = 512
# Answers (keys) remembered per query: its output buckets (three at most) or, with client hints,
# (bucket, rung) pairs; the others are made for each request, so memory stays as bounded as before.
HOT_ANSWERS_PER_QUERY: Final = 4


@dataclass(frozen=True, slots=True)
class HotKey:
    """The cache key of a request's answer, and the request headers it varies with."""

    key: str
    vary_accept: bool
    vary_hints: bool = False


@dataclass(frozen=True, slots=True)
class VariantRequest:
    """What one request asks for: the options, the bucket its `Accept` chose, whether the
    options came from `transform.auto_format` alone (a plain request: it must never fail), and
    whether a width hint may choose its size (`transform.hints`: the answer varies with it)."""

    options: TransformOptions
    bucket: FormatBucket
    automatic: bool = False
    vary_hints: bool = False

    @property
    def vary_accept(self) -> bool:
        return self.options.varies_with_accept


def _may_be_original(options: TransformOptions, bucket: FormatBucket) -> bool:
    """Format-only options whose bucket is the source's family: the source itself may be the
    answer, which only its content type (known from the tiers) decides."""
    return options.reencodes_only and bucket in _FAMILY_BUCKETS


class _HotQuery:
    """What the hot path remembers of one (path, query) asking for a variant: its keys, made once
    per output bucket (one when the answer does not vary with `Accept`, a few when it does) and,
    when a width hint may size it (`hintable`), per rung."""

    __slots__ = ("answers", "fixed", "hintable", "options", "path", "vary")

    def __init__(self, path: str, options: TransformOptions, auto_avif: bool, hintable: bool) -> None:
        self.path = path
        self.options = options
        self.vary = options.varies_with_accept
        self.hintable = hintable
        self.fixed = None if self.vary else options.bucket(None, auto_avif)  # the bucket, if one
        self.answers: dict[tuple[FormatBucket, int | None], HotKey | None] = {}

    def answer(self, bucket: FormatBucket, width: int | None = None) -> HotKey | None:
        """The variant key for `bucket` (at the hinted `width`), or None when the full path must
        answer (it may be the original)."""
        try:
            return self.answers[bucket, width]
        except KeyError:
            found = None
            options = with_width(self.options, width)
            if not _may_be_original(options, bucket):
                found = HotKey(variant_key(self.path, options.key(bucket)), self.vary, self.hintable)
            if len(self.answers) < HOT_ANSWERS_PER_QUERY:
                self.answers[bucket, width] = found
            return found


class HotKeys:
    """The cache key a GET with a query asks for, found without a lookup, for the hot path:
    remembered for the last `HOT_MEMO_ITEMS` short (path, query) pairs, whose answers never change (a
    signature verified once verifies every time). With `transform.auto_format`, options get
    `fm=auto` as on the full path, and a query without transform parameters goes there (the
    blob's type decides its answer)."""

    def __init__(self, parser: QueryParser, config: TransformConfig) -> None:
        self._parser = parser
        self._config = config
        # A _HotQuery; a path: the original (no transform parameter); None: the full path answers.
        self._queries: LRU[_HotQuery | str | None] = LRU(HOT_MEMO_ITEMS, 1, lambda _: 0)

    def key(self, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> HotKey | None:
        """The key of this request's answer (with a width hint's rung where one sizes it) and the
        headers it varies with; None when the full path must answer (a bad or unsigned query,
        perhaps the original of a variant)."""
        if len(raw_path) + len(raw_query) > HOT_MEMO_MAX_CHARS:
            hot = self._parse(raw_path, raw_query)
        else:
            memo = f"{raw_path}?{raw_query}"
            hot = self._queries.get(memo)
            if hot is None:
                if memo in self._queries:
                    return None
                hot = self._parse(raw_path, raw_query)
                self._queries.put(memo, hot)
        if hot is None:
            return None
        if isinstance(hot, str):
            return HotKey(hot, False)
        accept_bucket = hot.fixed
        if accept_bucket is None:
            accept_bucket = negotiate(headers.get("Accept"), self._config.auto_avif)
        width = hint_rung(headers, self._config.width_ladder) if hot.hintable else None
        return hot.answer(accept_bucket, width)

    def _parse(self, raw_path: str, raw_query: str) -> _HotQuery | str | None:
        try:
            given = self._parser.parse(raw_path, raw_query)
            path = parse_blob_path_cached(raw_path)
        except ImgproxyError:
            return None  # the full path words the 400 or 403
        options = apply_auto_format(given, self._config)
        if options is None:
            return path
        if given is None:
            return None  # a plain request under auto_format: its answer depends on the blob's type
        hintable = self._config.client_hints and takes_hints(given)
        return _HotQuery(path, options, self._config.auto_avif, hintable)


@dataclass(frozen=True, slots=True)
class Transforms:
    """What an app with `transform.enabled` serves variants with."""

    parser: QueryParser
    variants: Variants
    pool: TransformPool
    hot: HotKeys


def variant_etag(source_etag: str, name: str) -> str:
    """A strong ETag for the variant `name` of the source version `source_etag`."""
    digest = hashlib.blake2b(f"{source_etag}\0{name}".encode(), digest_size=12).hexdigest()
    return f'"v-{digest}"'


class Variants:
    """Answers variant requests from the tiers, or from the pool."""

    def __init__(
        self, fetcher: Fetcher, pool: TransformPool, config: TransformConfig, held_bytes: int
    ) -> None:
        self._fetcher = fetcher
        self._pool = pool
        self._max_src_bytes = config.max_src_bytes
        self._held_bytes = held_bytes  # cache.max_item_bytes: larger sources are not in memory
        # Source versions libvips could not read: asked again (any variant of them), they are
        # refused without decoding them again. Keyed by path and ETag: a new upload is tried anew.
        self._undecodable: LRU[str] = LRU(UNDECODABLE_MAX_ITEMS, 1, lambda _: 0)

    async def find(self, path: str, request: VariantRequest) -> Found:
        """What answers the request: the variant (from the tiers, or made now), or the original
        where it is the answer (see the module docstring); its bytes are opened by the fetcher."""
        vary = request.vary_accept
        own = _may_be_original(request.options, request.bucket)
        if own or request.automatic:
            content_type = (await self._fetcher.metadata(path)).content_type
            if request.automatic and not is_inert_image(content_type):
                # What is not a raster image never varies: an SVG (which the engine would draw)
                # stays the original, served under `http.active_content`.
                return await self._fetcher.find(path)
            if own and content_type in _OWN_FORMAT:
                return dataclasses.replace(await self._fetcher.find(path), vary_accept=vary)
        name = request.options.key(request.bucket)
        key = variant_key(path, name)
        try:
            found = await self._fetcher.find_variant(
                key, lambda current: self._make(path, name, request, current)
            )
        except TransformError:
            if not request.automatic:
                raise
            found = await self._fetcher.find(path)  # compression is optional
        return dataclasses.replace(found, vary_accept=vary)

    async def _make(self, path: str, name: str, request: VariantRequest, current: Entry | None) -> Entry:
        """The variant entry: `current` renewed if its source is unchanged, else made anew."""
        if current is not None and current.source_etag is not None:
            version = await self._fetcher.source_version(path, current.source_etag)
            if version is None:
                raise BlobNotFound(path)
            etag, confirmed_at = version
            if etag == current.source_etag:
                return dataclasses.replace(current, fetched_at=confirmed_at)
        sources: list[tuple[Found, Opened]] = []  # what was opened for the transform: closed after

        async def load() -> Source:
            found, opened = await self._fetcher.source(path, self._max_src_bytes)
            sources.append((found, opened))
            if (reason := self._undecodable.get(f"{path}\0{found.meta.etag}")) is not None:
                raise NotAnImage(reason)
            return await self._bytes_of(opened)

        try:
            if (await self._fetcher.metadata(path)).size > self._held_bytes:
                # Not held by the memory tier: read it (into memory, when streamed) only once a
                # slot is ours, so that transforms waiting for one hold no source bytes.
                result = await self._pool.run_loaded(load, request.options, request.bucket)
            else:
                result = await self._pool.run(await load(), request.options, request.bucket)
        except NotAnImage as exc:
            undecodable = f"{path}\0{sources[0][0].meta.etag}" if sources else None
            if undecodable is not None and self._undecodable.get(undecodable) is None:
                # Once per failing source version, with the path: libvips' words are not the client's.
                log.warning("cannot transform %r: %s (%s)", path, exc.reason, exc.detail or "no detail")
                self._undecodable.put(undecodable, exc.reason)
            raise
        finally:
            for _, opened in sources:
                await opened.close()
        source = sources[0][0]
        meta = BlobMeta(
            size=len(result.body),
            etag=variant_etag(source.meta.etag, name),
            last_modified=source.meta.last_modified,
            content_type=result.content_type,
        )
        confirmed = source.fetched_at or time.time()
        return Entry(variant_key(path, name), meta, confirmed, result.body, source_etag=source.meta.etag)

    async def _bytes_of(self, source: Opened) -> Source:
        """What the engine reads: the body, the open disk file, or the stream read once."""
        if source.body is not None:
            return bytes(source.body)
        if source.file is not None:
            return Path(f"/proc/self/fd/{source.file.file.fileno()}")
        assert source.stream is not None
        return b"".join([chunk async for chunk in source.stream])  # the one copy of a streamed source
