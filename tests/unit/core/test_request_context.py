"""Request ids: which client ids are kept, and the ids we make."""

from __future__ import annotations

import asyncio
import re

import pytest

from imgproxy.core.request_context import MAX_ID_CHARS, begin, current, current_id, new_request_id


@pytest.mark.parametrize("given", ["a", "0123456789abcdef", "A-b_c.d:e", "x" * MAX_ID_CHARS])
def test_a_short_safe_client_id_is_kept(given: str) -> None:
    """Up to 64 characters of [A-Za-z0-9._:-] are the request's id as sent."""
    assert asyncio.run(_begin(given)) == given


@pytest.mark.parametrize(
    "given", [None, "", "x" * (MAX_ID_CHARS + 1), "a b", "a\tb", "a/b", "a,b", "a;b", '"a"', "ü", "a\x00"]
)
def test_a_missing_or_unsafe_client_id_is_replaced(given: str | None) -> None:
    """Anything else gets a new id of 32 hex digits."""
    made = asyncio.run(_begin(given))
    assert made != given
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_made_ids_differ() -> None:
    """10,000 made ids are all different."""
    assert len({new_request_id() for _ in range(10_000)}) == 10_000


def test_the_context_belongs_to_the_task_that_began_it() -> None:
    """A request's context is seen by the tasks it starts, not by its neighbours or outside."""

    async def scenario() -> tuple[str | None, str | None, str | None, str | None]:
        async def request(given: str) -> tuple[str | None, str | None]:
            begin(given)
            child = await asyncio.create_task(_read())  # a task it starts copies its context
            return current_id(), child

        (first, first_child), (second, _) = await asyncio.gather(request("one"), request("two"))
        return first, first_child, second, current_id()

    assert asyncio.run(scenario()) == ("one", "one", "two", None)


async def _begin(given: str | None) -> str:
    context = begin(given)
    assert current() is context
    return context.request_id


async def _read() -> str | None:
    return current_id()
