"""The figures of the CDN purge forwarder (`cdn.purger`), as `/metrics` reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CdnPurgeStats:
    """Purges forwarded to the CDN: counters since start, and the queue now."""

    sent: int = 0  # the CDN answered 2xx
    failed: int = 0  # given up: a 4xx other than 408/425/429, or every attempt failed
    retried: int = 0  # attempts after a failed one
    dropped: int = (
        0  # not sent as asked: replaced by one purge of everything (queue full), or left at shutdown
    )
    queued: int = 0  # waiting to be sent (the one being sent not included)
