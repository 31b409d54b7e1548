"""Unit tests for `imgproxy.core.lru`: the LRU bookkeeping and the fill tickets of `AsyncLRU`."""

from __future__ import annotations

import pytest

from imgproxy.core.lru import LRU, AsyncLRU, CacheStats, FillTicket


def make_lru(max_items: int = 10, max_bytes: int = 100) -> LRU[bytes]:
    """An LRU of byte strings whose size is their length."""
    return LRU(max_items, max_bytes, len)


def make_cache(max_items: int = 10, max_bytes: int = 100) -> AsyncLRU[bytes]:
    """A AsyncLRU of byte strings whose size is their length."""
    return AsyncLRU(max_items, max_bytes, len)


def keys_in_order(lru: LRU[bytes]) -> list[str]:
    """Keys from least to most recently used."""
    return [key for key, _ in lru.items()]


def assert_bounds(lru: LRU[bytes]) -> None:
    """Both bounds hold and `bytes` equals the sum of the stored sizes."""
    assert len(lru) <= lru.max_items
    assert lru.bytes <= lru.max_bytes
    assert lru.bytes == sum(len(value) for _, value in lru.items())


# --- LRU -----------------------------------------------------------------------------------------


def test_get_returns_stored_value_and_none_for_missing_key() -> None:
    """`get` returns the stored value for a present key and None for an absent one."""
    lru = make_lru()
    lru.put("a", b"xyz")
    assert lru.get("a") == b"xyz"
    assert lru.get("missing") is None
    assert "a" in lru
    assert "missing" not in lru


def test_get_marks_key_most_recently_used() -> None:
    """Reading a key moves it to the most-recently-used end, so it is evicted last."""
    lru = make_lru(max_items=3)
    for key in ("a", "b", "c"):
        lru.put(key, b"x")
    assert lru.get("a") == b"x"
    assert keys_in_order(lru) == ["b", "c", "a"]
    lru.put("d", b"x")
    assert "a" in lru
    assert "b" not in lru
    assert keys_in_order(lru) == ["c", "a", "d"]


def test_get_of_missing_key_does_not_change_order() -> None:
    """A miss leaves the recency order untouched."""
    lru = make_lru()
    lru.put("a", b"1")
    lru.put("b", b"2")
    lru.get("zzz")
    assert keys_in_order(lru) == ["a", "b"]


def test_put_evicts_least_recently_used_when_count_bound_exceeded() -> None:
    """Past `max_items` entries the oldest entries go first, one per extra put."""
    lru = make_lru(max_items=3, max_bytes=1000)
    for index in range(6):
        assert lru.put(f"k{index}", b"v")
        assert_bounds(lru)
    assert keys_in_order(lru) == ["k3", "k4", "k5"]
    assert lru.evictions == 3


def test_put_evicts_until_byte_bound_holds() -> None:
    """A put that overflows `max_bytes` evicts as many LRU entries as needed, in LRU order."""
    lru = make_lru(max_items=100, max_bytes=10)
    lru.put("a", b"1234")  # 4
    lru.put("b", b"123")  # 7
    lru.put("c", b"12")  # 9
    assert lru.bytes == 9
    lru.put("d", b"12345678")  # 17 -> evict a (13), b (10): both needed
    assert_bounds(lru)
    assert keys_in_order(lru) == ["c", "d"]
    assert lru.bytes == 10
    assert lru.evictions == 2


@pytest.mark.parametrize(
    ("max_items", "max_bytes", "sizes"),
    [
        (3, 1000, [1, 1, 1, 1, 1, 1]),
        (100, 10, [4, 3, 2, 8, 1, 10, 5, 5, 6]),
        (3, 10, [2, 2, 2, 2, 9, 1, 1, 3, 10, 0, 0, 0, 0]),
        (1, 1, [1, 0, 1, 1, 0]),
    ],
)
def test_both_bounds_hold_after_every_put(max_items: int, max_bytes: int, sizes: list[int]) -> None:
    """After each put, entry count and byte total are within their bounds and `bytes` is exact."""
    lru = make_lru(max_items=max_items, max_bytes=max_bytes)
    for index, size in enumerate(sizes):
        assert lru.put(f"k{index}", b"x" * size)
        assert_bounds(lru)
        assert f"k{index}" in lru  # the value just stored is never the one evicted


def test_eviction_order_follows_recency_not_insertion() -> None:
    """Entries touched by `get` or re-`put` survive eviction longer than untouched ones."""
    lru = make_lru(max_items=4, max_bytes=1000)
    for key in ("a", "b", "c", "d"):
        lru.put(key, b"x")
    lru.get("a")
    lru.put("b", b"y")  # replacing also refreshes recency
    assert keys_in_order(lru) == ["c", "d", "a", "b"]
    evicted: list[str] = []
    for key in ("e", "f", "g", "h"):
        before = set(keys_in_order(lru))
        lru.put(key, b"x")
        evicted.extend(before - set(keys_in_order(lru)))
    assert evicted == ["c", "d", "a", "b"]


def test_replacing_key_adjusts_bytes_without_counting_eviction() -> None:
    """Re-putting a key replaces its size in the total and is not an eviction."""
    lru = make_lru(max_items=10, max_bytes=100)
    lru.put("a", b"x" * 10)
    lru.put("b", b"x" * 5)
    assert lru.bytes == 15
    lru.put("a", b"x" * 3)
    assert lru.bytes == 8
    assert len(lru) == 2
    assert lru.get("a") == b"xxx"
    lru.put("a", b"x" * 40)
    assert lru.bytes == 45
    assert lru.evictions == 0


def test_replacing_key_with_larger_value_evicts_others_but_keeps_key() -> None:
    """Growing an entry past `max_bytes` evicts other LRU entries, never the replaced key itself."""
    lru = make_lru(max_items=10, max_bytes=10)
    lru.put("a", b"x" * 3)
    lru.put("b", b"x" * 3)
    lru.put("c", b"x" * 3)
    lru.put("a", b"x" * 7)  # a is now most recent: b goes (3 + 3 + 7 = 13 > 10)
    assert_bounds(lru)
    assert keys_in_order(lru) == ["c", "a"]
    assert lru.bytes == 10
    assert lru.evictions == 1


def test_value_of_exactly_max_bytes_is_accepted_and_evicts_everything_else() -> None:
    """A value whose size equals `max_bytes` fits, at the cost of every other entry."""
    lru = make_lru(max_items=10, max_bytes=10)
    lru.put("a", b"x" * 4)
    lru.put("b", b"x" * 4)
    assert lru.put("big", b"x" * 10)
    assert keys_in_order(lru) == ["big"]
    assert lru.bytes == 10
    assert lru.evictions == 2


def test_value_larger_than_max_bytes_is_refused_without_evicting_others() -> None:
    """`put` of a value that can never fit returns False and leaves other entries alone."""
    lru = make_lru(max_items=10, max_bytes=10)
    lru.put("a", b"x" * 4)
    lru.put("b", b"x" * 4)
    assert lru.put("huge", b"x" * 11) is False
    assert "huge" not in lru
    assert keys_in_order(lru) == ["a", "b"]
    assert lru.bytes == 8
    assert lru.evictions == 0


def test_oversized_replacement_drops_existing_entry_for_that_key() -> None:
    """Refusing an oversized value for a present key removes the old value too (no stale copy)."""
    lru = make_lru(max_items=10, max_bytes=10)
    lru.put("a", b"x" * 4)
    lru.put("b", b"x" * 4)
    assert lru.put("a", b"x" * 11) is False
    assert "a" not in lru
    assert keys_in_order(lru) == ["b"]
    assert lru.bytes == 4
    assert lru.evictions == 0


def test_pop_returns_value_and_frees_bytes() -> None:
    """`pop` returns the removed value, subtracts its size, and returns None for absent keys."""
    lru = make_lru()
    lru.put("a", b"abc")
    lru.put("b", b"de")
    assert lru.pop("a") == b"abc"
    assert lru.bytes == 2
    assert len(lru) == 1
    assert lru.pop("a") is None
    assert lru.pop("never") is None
    assert lru.bytes == 2
    assert lru.evictions == 0


def test_clear_returns_count_and_resets_bytes_but_not_evictions() -> None:
    """`clear` empties the map, reports how many entries it removed, and keeps the eviction count."""
    lru = make_lru(max_items=2)
    for key in ("a", "b", "c"):
        lru.put(key, b"xy")
    assert lru.evictions == 1
    assert lru.clear() == 2
    assert len(lru) == 0
    assert lru.bytes == 0
    assert lru.evictions == 1
    assert lru.clear() == 0


def test_evictions_counter_counts_only_bound_evictions() -> None:
    """Evictions count entries pushed out by a bound, not pops, clears, replacements or refusals."""
    lru = make_lru(max_items=2, max_bytes=10)
    lru.put("a", b"x")
    lru.put("b", b"x")
    lru.put("c", b"x")  # evicts a
    lru.put("d", b"x" * 10)  # evicts b and c
    assert lru.evictions == 3
    lru.put("d", b"x")  # replacement
    lru.pop("d")
    lru.put("e", b"x" * 11)  # refusal
    lru.clear()
    assert lru.evictions == 3


def test_on_evict_is_called_for_bound_evictions_only() -> None:
    """The `on_evict` hook sees each entry pushed out by a bound, in LRU order, and nothing else."""
    lru = make_lru(max_items=2, max_bytes=10)
    seen: list[tuple[str, bytes]] = []
    lru.on_evict = lambda key, value: seen.append((key, value))
    lru.put("a", b"1")
    lru.put("b", b"22")
    lru.put("c", b"333")  # evicts a
    lru.put("d", b"x" * 10)  # evicts b, then c
    assert seen == [("a", b"1"), ("b", b"22"), ("c", b"333")]
    lru.put("d", b"y")  # replacement
    lru.put("e", b"x" * 11)  # refusal
    lru.pop("d")
    lru.put("f", b"f")
    lru.clear()
    assert seen == [("a", b"1"), ("b", b"22"), ("c", b"333")]


def test_items_lists_entries_least_recently_used_first() -> None:
    """`items()` returns every (key, value) pair from least to most recently used."""
    lru = make_lru()
    lru.put("a", b"1")
    lru.put("b", b"2")
    lru.get("a")
    assert lru.items() == [("b", b"2"), ("a", b"1")]


# --- AsyncLRU and fill tickets ------------------------------------------------------------------


async def test_finish_fill_stores_value_when_ticket_valid() -> None:
    """A ticket that nothing voided lets `finish_fill` store its value."""
    cache = make_cache()
    ticket = cache.begin_fill("a")
    assert isinstance(ticket, FillTicket)
    assert ticket.valid
    assert await cache.finish_fill(ticket, b"value") is True
    assert await cache.get("a") == b"value"
    assert len(cache._tickets) == 0


async def test_a_ticket_stores_once() -> None:
    """Finishing with a ticket a second time stores nothing: after a purge in between, the old
    download must not come back through a reused ticket."""
    cache = make_cache()
    ticket = cache.begin_fill("a")
    assert await cache.finish_fill(ticket, b"first") is True
    await cache.pop("a")
    assert await cache.finish_fill(ticket, b"again") is False
    assert await cache.get("a") is None


async def test_finish_fill_reports_refusal_of_oversized_value() -> None:
    """`finish_fill` returns False when the LRU refuses a value larger than `max_bytes`."""
    cache = make_cache(max_bytes=4)
    ticket = cache.begin_fill("a")
    assert await cache.finish_fill(ticket, b"12345") is False
    assert await cache.get("a") is None
    assert len(cache._tickets) == 0


async def test_purge_between_begin_and_finish_voids_ticket() -> None:
    """`pop(key)` after `begin_fill` voids the ticket, so the download's value is not stored."""
    cache = make_cache()
    ticket = cache.begin_fill("a")
    assert await cache.pop("a") is False  # nothing cached yet
    assert ticket.valid is False
    assert await cache.finish_fill(ticket, b"old bytes") is False
    assert await cache.get("a") is None
    assert cache.stats().items == 0
    assert len(cache._tickets) == 0


async def test_purge_of_cached_key_returns_true_and_voids_refresh() -> None:
    """Purging a cached key removes it (True) and a refresh that began earlier cannot restore it."""
    cache = make_cache()
    await cache.finish_fill(cache.begin_fill("a"), b"v1")
    refresh = cache.begin_fill("a")
    assert await cache.pop("a") is True
    assert await cache.finish_fill(refresh, b"v1-again") is False
    assert await cache.get("a") is None
    assert await cache.pop("a") is False


async def test_clear_voids_every_ticket() -> None:
    """`clear()` voids the tickets of all keys, so none of the in-flight downloads is stored."""
    cache = make_cache()
    await cache.finish_fill(cache.begin_fill("cached"), b"x")
    tickets = [cache.begin_fill("a"), cache.begin_fill("a"), cache.begin_fill("b")]
    assert await cache.clear() == 1
    assert all(not ticket.valid for ticket in tickets)
    assert len(cache._tickets) == 0
    for ticket in tickets:
        assert await cache.finish_fill(ticket, b"stale") is False
    assert cache.stats().items == 0


async def test_ticket_taken_after_purge_is_valid() -> None:
    """A purge voids only tickets taken before it; a download started afterwards may store."""
    cache = make_cache()
    old = cache.begin_fill("a")
    await cache.pop("a")
    new = cache.begin_fill("a")
    assert await cache.finish_fill(old, b"old") is False
    assert await cache.finish_fill(new, b"new") is True
    assert await cache.get("a") == b"new"
    assert len(cache._tickets) == 0


async def test_finish_fill_with_none_stores_nothing_and_releases_ticket() -> None:
    """`finish_fill(ticket, None)` stores nothing, keeps an existing entry and releases the ticket."""
    cache = make_cache()
    ticket = cache.begin_fill("a")
    assert await cache.finish_fill(ticket, None) is False
    assert await cache.get("a") is None
    assert len(cache._tickets) == 0

    await cache.finish_fill(cache.begin_fill("b"), b"kept")
    assert await cache.finish_fill(cache.begin_fill("b"), None) is False
    assert await cache.get("b") == b"kept"
    assert len(cache._tickets) == 0


async def test_finish_fill_with_none_and_drop_removes_entry() -> None:
    """`finish_fill(ticket, None, drop=True)` removes what was cached under the key."""
    cache = make_cache()
    await cache.finish_fill(cache.begin_fill("a"), b"x")
    assert await cache.finish_fill(cache.begin_fill("a"), None, drop=True) is False
    assert await cache.get("a") is None
    assert cache.stats().bytes == 0
    assert len(cache._tickets) == 0


async def test_voided_ticket_with_drop_does_not_remove_newer_entry() -> None:
    """A voided ticket changes nothing, even with `drop=True`: a value stored after the purge stays."""
    cache = make_cache()
    old = cache.begin_fill("a")
    await cache.pop("a")
    await cache.finish_fill(cache.begin_fill("a"), b"new")
    assert await cache.finish_fill(old, None, drop=True) is False
    assert await cache.get("a") == b"new"


async def test_purge_of_other_key_does_not_void_ticket() -> None:
    """A ticket for key A stays valid when key B is purged."""
    cache = make_cache()
    ticket_a = cache.begin_fill("a")
    ticket_b = cache.begin_fill("b")
    await cache.pop("b")
    assert ticket_a.valid is True
    assert ticket_b.valid is False
    assert await cache.finish_fill(ticket_a, b"a-bytes") is True
    assert await cache.get("a") == b"a-bytes"


async def test_concurrent_tickets_for_one_key_are_released_independently() -> None:
    """Finishing one of two tickets for a key keeps the other registered, so a purge still voids it."""
    cache = make_cache()
    first = cache.begin_fill("a")
    second = cache.begin_fill("a")
    assert await cache.finish_fill(first, b"1") is True
    assert len(cache._tickets) == 1  # only `second` is still outstanding
    await cache.pop("a")
    assert second.valid is False
    assert await cache.finish_fill(second, b"2") is False
    assert await cache.get("a") is None
    assert len(cache._tickets) == 0


async def test_stats_is_a_snapshot_of_sizes_limits_and_evictions() -> None:
    """`stats()` reports items, bytes, limits and evictions, and does not change afterwards."""
    cache = make_cache(max_items=2, max_bytes=100)
    assert cache.stats() == CacheStats(items=0, bytes=0, max_items=2, max_bytes=100, evictions=0)
    for key, value in (("a", b"123"), ("b", b"45"), ("c", b"6789")):
        await cache.finish_fill(cache.begin_fill(key), value)
    snapshot = cache.stats()
    assert snapshot == CacheStats(items=2, bytes=6, max_items=2, max_bytes=100, evictions=1)
    await cache.clear()
    assert snapshot.items == 2
    assert snapshot.bytes == 6
    assert cache.stats() == CacheStats(items=0, bytes=0, max_items=2, max_bytes=100, evictions=1)


async def test_memory_cache_get_marks_most_recently_used() -> None:
    """`AsyncLRU.get` refreshes recency like `LRU.get`, so the read key survives the next eviction."""
    cache = make_cache(max_items=2)
    await cache.finish_fill(cache.begin_fill("a"), b"a")
    await cache.finish_fill(cache.begin_fill("b"), b"b")
    assert await cache.get("a") == b"a"
    await cache.finish_fill(cache.begin_fill("c"), b"c")
    assert await cache.get("a") == b"a"
    assert await cache.get("b") is None


async def test_unlocked_get_is_the_same_lookup_and_busy_reports_the_lock() -> None:
    """The hit path's `get_unlocked` sees what `get` sees (recency too); `busy` is the lock's state."""
    cache = make_cache(max_items=2)
    await cache.finish_fill(cache.begin_fill("a"), b"a")
    await cache.finish_fill(cache.begin_fill("b"), b"b")
    assert not cache.busy
    assert cache.get_unlocked("a") == b"a"  # now most recent: "b" goes next
    await cache.finish_fill(cache.begin_fill("c"), b"c")
    assert cache.get_unlocked("b") is None
    async with cache._lock:
        assert cache.busy
