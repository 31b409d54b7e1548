"""How the figures of several workers combine for `/admin/cache` (`core.stats.CacheFigures`)."""

from __future__ import annotations

from imgproxy.core.stats import CacheFigures, DiskFigures, FetchCounters, MemoryFigures, SharedFigures


def figures(hits: int, disk_size: int, disk_bytes: int, redis_up: bool = True) -> CacheFigures:
    return CacheFigures(
        MemoryFigures(10, 1000, 100, 10_000, 2, 1),
        FetchCounters(hits=hits, misses=1),
        in_flight=1,
        disk=DiskFigures(disk_size, disk_bytes, 5000, 1, 0, 0, 2),
        shared=SharedFigures(redis_up, 3, 4, 5, 0, 0, 0, 1, 1),
    )


def test_counters_and_sizes_are_summed_over_workers() -> None:
    """Each worker has its own memory cache, limits and counters: those are summed."""
    merged = figures(7, 3, 300).merge([figures(5, 3, 300), figures(1, 3, 300)])
    body = merged.as_json()
    assert (body["hits"], body["misses"], body["cache_size"], body["cache_bytes_limit"]) == (
        13,
        3,
        30,
        30_000,
    )
    assert (body["in_flight"], body["disk_fills"], body["disk_bytes_limit"], body["redis_hits"]) == (
        3,
        6,
        15_000,
        9,
    )


def test_the_shared_directorys_contents_are_the_largest_workers() -> None:
    """An entry adopted from a sibling is in both indexes: the largest index counts each file once."""
    body = figures(1, 3, 300).merge([figures(1, 5, 250), figures(1, 4, 900)]).as_json()
    assert (body["disk_size"], body["disk_bytes"]) == (5, 900)


def test_flags_are_the_answering_workers() -> None:
    """Booleans are not summed: the worker that answers says whether Redis is up, disk enabled."""
    body = figures(1, 1, 1, redis_up=True).merge([figures(1, 1, 1, redis_up=False)]).as_json()
    assert body["redis_up"] is True and body["disk_enabled"] is True


def test_a_siblings_json_reads_back_as_the_same_figures() -> None:
    """What a sibling answers (`as_json`) parses back to equal figures, with and without tiers."""
    full = figures(4, 2, 20)
    assert CacheFigures.from_json(full.as_json()) == full
    bare = CacheFigures(MemoryFigures(1, 2, 3, 4, 5, 6), FetchCounters(hits=2), in_flight=0)
    assert CacheFigures.from_json(bare.as_json()) == bare
    assert bare.as_json()["disk_enabled"] is False
