"""What is on disk when the disk tier opens: every complete entry, and (unless a sibling may be
writing) the temporaries, orphans and incomplete or damaged entries deleted."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from imgproxy.cache.disk.files import (
    LOCK_SUFFIX,
    META_SUFFIX,
    TMP_SUFFIX,
    VARIANTS_SUFFIX,
    DiskEntry,
    Layout,
    discard,
)
from imgproxy.config import DiskConfig


@dataclass(slots=True)
class Scanned:
    """The entries found (with their last access time) and how many incomplete ones were deleted."""

    entries: list[tuple[float, DiskEntry]] = field(default_factory=list)
    discarded: int = 0


def scan(root: Path, layout: Layout, clean: bool = True) -> Scanned:
    """Read every entry under `root`; unless told not to `clean` (a sibling may be writing),
    delete temporaries, orphans and incomplete or damaged entries."""
    root.mkdir(parents=True, exist_ok=True)
    result = Scanned()
    found = result.entries
    files = [*root.glob("*/*/*"), *root.glob(f"*/*/*{VARIANTS_SUFFIX}/*")]
    metas: set[Path] = set()
    for file in files:
        if file.name.endswith(TMP_SUFFIX) and clean:
            discard(file)
            result.discarded += 1
        elif file.name.endswith(META_SUFFIX):
            metas.add(file)
    for meta_path in metas:
        data = meta_path.with_name(meta_path.name[: -len(META_SUFFIX)])
        entry, _ = layout.inspect(meta_path, data)
        if entry is not None:
            with contextlib.suppress(OSError):
                found.append((data.stat().st_atime, entry))
        elif clean:
            discard(meta_path)
            discard(data)
            result.discarded += 1
    if not clean:
        return result
    for file in files:
        if file.name.endswith((META_SUFFIX, LOCK_SUFFIX, TMP_SUFFIX)) or (
            file.name.endswith(VARIANTS_SUFFIX) and file.is_dir()
        ):
            continue
        if Layout.meta_path(file) not in metas:
            discard(file)  # data without metadata: a crash between the renames
            result.discarded += 1
    return result


def clean_disk(config: DiskConfig, container: str) -> int:
    """Delete temporaries, orphans and incomplete entries before workers share the directory;
    the number deleted."""
    root = Path(config.path).resolve()
    return scan(root, Layout(root, container), clean=True).discarded
