"""The CDN stand-in for the tests of this directory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.cdn_standin import CdnStandIn, run_cdn_standin


@pytest.fixture
async def cdn() -> AsyncIterator[CdnStandIn]:
    """A CDN purge endpoint that records what it receives (see `tests.support.cdn_standin`)."""
    async with run_cdn_standin() as standin:
        yield standin
