"""Shared by the transform tests."""

from __future__ import annotations

import pytest

from imgproxy.transform import engine


@pytest.fixture(scope="module", autouse=True)
def _libvips() -> None:
    """The settings a pool would make: no operation cache, SVG's loader unblocked, one thread per
    transform (the tests that call the engine directly have no pool to make them)."""
    engine.configure(threads_per_transform=1)
