"""The cache part's figures besides the wrk rows (`bench.report.LoadRow`): cold bursts, memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..client import BurstResult, StreamsResult


@dataclass(slots=True)
class BurstRow:
    """One cold burst on one target, with the origin requests it caused for its blob."""

    target: str
    result: BurstResult
    origin_gets: int
    origin_other: int

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "target": self.target,
            "origin_gets": self.origin_gets,
            "origin_other_requests": self.origin_other,
            "clients": r.clients,
            "ok": r.ok,
            "first_s": r.first_s,
            "median_s": r.median_s,
            "last_s": r.last_s,
            "statuses": dict(r.statuses),
            "x_cache": dict(r.x_cache),
        }


@dataclass(slots=True)
class MemoryFigure:
    """VmHWM of a fresh imgproxy's serving processes before and after the 200 MiB streams."""

    idle_hwm: dict[int, int]  # pid -> VmHWM bytes right after start
    peak_hwm: dict[int, int]  # pid -> VmHWM bytes after the streams
    streams: StreamsResult
    blob_bytes: int

    def as_dict(self) -> dict[str, Any]:
        s = self.streams
        return {
            "idle_vmhwm": self.idle_hwm,
            "peak_vmhwm": self.peak_hwm,
            "clients": s.clients,
            "complete": s.complete,
            "seconds": s.seconds,
            "bytes_read": s.bytes_read,
            "blob_bytes": self.blob_bytes,
        }
