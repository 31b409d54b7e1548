"""The disk tier's files: where an entry lives, its metadata file, and small file helpers.

Layout under `disk.path`: an original at `<k[0:2]>/<k[2:4]>/<k>`, where `k` is the SHA-256 of the
container and the blob path, so no blob name reaches outside the directory; its variants in the
directory `<k>.v/`, each named by the SHA-256 of its canonical name, so one `rmtree` purges them
whichever process wrote them. Next to each data file: `<name>.meta` (JSON), `<name>.lock` (the
flock of a download under way) and `<name>.*.tmp` (writes not yet renamed into place).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import aiofiles
import aiofiles.os
import aiofiles.threadpool

from imgproxy.cache.disk.integrity import FileIdentity, content_mismatch, identity_mismatch
from imgproxy.core.blob import BlobMeta, Entry, split_key

log = logging.getLogger(__name__)

META_SUFFIX: Final = ".meta"
TMP_SUFFIX: Final = ".tmp"
LOCK_SUFFIX: Final = ".lock"
VARIANTS_SUFFIX: Final = ".v"


@dataclass(frozen=True, slots=True)
class DiskEntry:
    """A complete entry on disk."""

    key: str  # the blob path, or the path and a variant name (see `core.blob.variant_key`)
    meta: BlobMeta
    fetched_at: float  # wall-clock seconds (time.time), so freshness survives a restart
    data: Path
    identity: FileIdentity  # the data file as written: checked against fstat on every hit
    digest: str | None = None  # BLAKE2b of the bytes, recorded when the blob has no Content-MD5
    source_etag: str | None = None  # a variant's source version

    def as_entry(self) -> Entry:
        return Entry(self.key, self.meta, self.fetched_at, file=self.data, source_etag=self.source_etag)


@dataclass(frozen=True, slots=True)
class Damage:
    """An entry whose data file is not what its metadata describes, and why."""

    entry: DiskEntry
    reason: str
    stat: os.stat_result | None  # of the damaged file, when it could be opened


class DamagedEntry(Exception):
    """An entry's file is not what was written; the entry has been dropped (ask Azure instead)."""


class Layout:
    """Where the files of a key live, for one container."""

    def __init__(self, root: Path, container: str) -> None:
        self.root = root
        self.container = container

    def data_path(self, key: str) -> Path:
        path, variant = split_key(key)
        digest = hashlib.sha256(f"{self.container}\0{path}".encode()).hexdigest()
        original = self.root / digest[:2] / digest[2:4] / digest
        if not variant:
            return original
        return self.variants_dir(original) / hashlib.sha256(variant.encode()).hexdigest()

    @staticmethod
    def variants_dir(original: Path) -> Path:
        return original.with_name(original.name + VARIANTS_SUFFIX)

    @staticmethod
    def meta_path(data: Path) -> Path:
        return data.with_name(data.name + META_SUFFIX)

    @staticmethod
    def lock_path(data: Path) -> Path:
        return data.with_name(data.name + LOCK_SUFFIX)

    def inspect(self, meta_path: Path, data: Path) -> tuple[DiskEntry | None, Damage | None]:
        """The complete entry `meta_path` describes, or None if missing, foreign or incomplete;
        and, when our metadata describes a data file that is not what it says (short, long,
        modified since, unreadable), why. A missing data file is not damage: a sibling deleting
        an entry removes the data first."""
        try:
            raw = json.loads(meta_path.read_text())
            entry = entry_from_json(raw, data)
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        if raw.get("container") != self.container or self.data_path(entry.key) != data:
            return None, None
        try:
            with data.open("rb") as file:  # unreadable (a directory, EIO, no permission): not an entry
                stat = os.fstat(file.fileno())
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, Damage(entry, f"unreadable: {exc.strerror}", None)
        reason = identity_mismatch(entry.identity, stat)
        if reason is not None:
            return None, Damage(entry, reason, stat)
        return entry, None


class OpenEntry:
    """An entry's data file, open and checked: send it, then `close` it (idempotent)."""

    def __init__(self, entry: DiskEntry, file: BinaryIO, stat: os.stat_result, on_damage: Any) -> None:
        self.entry = entry
        self.file = file
        self._stat = stat
        self._on_damage = on_damage  # DiskTier.damaged

    async def damaged(self, reason: str) -> None:
        """The send came up short, or the bytes were wrong: drop the entry (logged once)."""
        await self._on_damage(self.entry, reason, self._stat)

    def close(self) -> None:
        self.file.close()


def read_verified(file: BinaryIO, entry: DiskEntry) -> tuple[bytes, str | None]:
    """The whole file and, if it is not the entry's content, why not (runs in a thread)."""
    body = file.read(entry.meta.size + 1)  # one byte more shows a file that grew
    return body, content_mismatch(body, entry.meta.size, entry.meta.content_md5, entry.digest)


def same_file(path: Path, stat: os.stat_result) -> bool:
    """Whether `path` is still the file `stat` describes (or is gone): then it may be deleted."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return True
    return (now.st_dev, now.st_ino) == (stat.st_dev, stat.st_ino)


async def open_raw(file: Path) -> BinaryIO:
    """`open(file, "rb")` in a thread, closed later if we are cancelled while it opens."""
    opening = asyncio.ensure_future(asyncio.to_thread(open, file, "rb"))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(close_orphan)
        raise


async def open_file(file: Path, mode: str) -> Any:
    """`aiofiles.open` that cannot leak: if we are cancelled while the thread opens the file,
    the file is closed as soon as the thread hands it over."""
    opening = asyncio.ensure_future(asyncio.to_thread(open, file, mode))
    try:
        raw = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(close_orphan)
        raise
    return aiofiles.threadpool.wrap(raw)


def close_orphan(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def discard(file: Path) -> None:
    """Delete what is at `file`, whatever it is (a directory where a data file belongs is not ours)."""
    try:
        if file.is_dir() and not file.is_symlink():
            shutil.rmtree(file, ignore_errors=True)
        else:
            file.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot delete %s from the disk tier: %s", file, exc)


def write_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


async def delete_entry(data: Path) -> None:
    """Delete an entry's data and metadata files, if present."""
    for file in (data, Layout.meta_path(data)):
        await unlink(file)


async def unlink(file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.unlink(file)


def meta_json(container: str, entry: DiskEntry) -> dict[str, Any]:
    meta = entry.meta
    return {
        "container": container,
        "path": entry.key,
        "size": meta.size,
        "etag": meta.etag,
        "last_modified": meta.last_modified.isoformat(),
        "content_type": meta.content_type,
        "content_md5": base64.b64encode(meta.content_md5).decode() if meta.content_md5 else None,
        "fetched_at": entry.fetched_at,
        "mtime_ns": entry.identity.mtime_ns,
        "blake2b": entry.digest,
        "source_etag": entry.source_etag,
    }


def entry_from_json(raw: dict[str, Any], data: Path) -> DiskEntry:
    md5 = raw.get("content_md5")
    meta = BlobMeta(
        size=int(raw["size"]),
        etag=str(raw["etag"]),
        last_modified=datetime.fromisoformat(raw["last_modified"]),
        content_type=str(raw["content_type"]),
        content_md5=base64.b64decode(md5) if md5 else None,
    )
    digest, source_etag = raw.get("blake2b"), raw.get("source_etag")
    return DiskEntry(
        str(raw["path"]),
        meta,
        float(raw["fetched_at"]),
        data,
        FileIdentity(meta.size, int(raw["mtime_ns"])),  # no mtime_ns: written by an older version
        str(digest) if digest is not None else None,
        str(source_etag) if source_etag is not None else None,
    )
