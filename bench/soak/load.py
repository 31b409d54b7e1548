"""The soak's mixed load: clients drawing one action at a time, every answer checked and counted.

The mix (weights per hundred actions): hits of hot originals and variants (55), misses of a pool of
originals too large for the memory tier to keep (12), cold transforms of 12 MP and 2.5 MP JPEGs at
any width 100-1,600 in JPEG, WebP or PNG (6), range requests (10), pass-through uploads of 64-512
KiB (8) and pages (8), purges of pool originals (1), a 502 sent again as the app does. Statuses
are counted by action; a 5xx is "caused" if it came while the run had Redis down on purpose
(`Counts.caused_window`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import aiohttp

POOL: Final = 400  # originals of 20-200 KB: more than the memory tier keeps
HOT: Final = 20
BIG_BLOB: Final = "soak/big-2m.bin"
SOURCES: Final = ("soak/photo-12mp.jpg", "soak/photo-2.5mp.jpg")
MIX: Final = {"hit": 55, "miss": 12, "cold": 6, "range": 10, "upload": 8, "page": 8, "purge": 1}
FORMATS: Final = ("jpeg", "webp", "png")
BIG_SIZE: Final = 2 * 1024 * 1024
PURGE_ATTEMPTS: Final = 3


def pool_blob(index: int) -> str:
    return f"soak/pool/{index:04d}.bin"


def blob_bytes(index: int) -> bytes:
    """Pool blob `index`'s deterministic contents, 20-200 KB."""
    rng = random.Random(index)
    return rng.randbytes(rng.randint(20_000, 200_000))


@dataclass
class Counts:
    statuses: Counter[str] = field(default_factory=Counter)  # "action status"
    unexpected_5xx: int = 0
    caused_5xx: int = 0
    wrong_bodies: int = 0
    transport_errors: int = 0
    caused_window: tuple[float, float] | None = None  # monotonic (kill, every worker sees Redis again)
    outage_s: float | None = None
    purge_retries: Counter[str] = field(default_factory=Counter)  # 502s sent again, by reason
    five_xx_times: list[float] = field(default_factory=list)  # monotonic, when each 5xx's request began

    def record(self, action: str, status: int, began: float) -> None:
        self.statuses[f"{action} {status}"] += 1
        if status >= 500:
            self.five_xx_times.append(began)
            window = self.caused_window
            if window is not None and window[0] <= began <= window[1]:
                self.caused_5xx += 1
            else:
                self.unexpected_5xx += 1


@dataclass
class Load:
    base: str
    admin_token: str
    counts: Counts = field(default_factory=Counts)
    requests: int = 0

    async def action(self, session: aiohttp.ClientSession, rng: random.Random) -> None:
        action = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        began = time.monotonic()
        try:
            status = await getattr(self, "do_" + action)(session, rng)
        except (aiohttp.ClientError, TimeoutError):
            self.counts.transport_errors += 1
            return
        self.requests += 1
        self.counts.record(action, status, began)

    async def get(self, session: aiohttp.ClientSession, path: str, expected: bytes | None = None) -> int:
        async with session.get(self.base + path) as response:
            body = await response.read()
            if expected is not None and response.status == 200 and body != expected:
                self.counts.wrong_bodies += 1
            return response.status

    async def do_hit(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        if rng.random() < 0.5:
            index = rng.randrange(HOT)
            return await self.get(session, "/images/" + pool_blob(index), blob_bytes(index))
        return await self.get(session, f"/images/{SOURCES[1]}?w={160 * (1 + rng.randrange(4))}&fm=webp")

    async def do_miss(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        index = rng.randrange(HOT, POOL)
        return await self.get(session, "/images/" + pool_blob(index), blob_bytes(index))

    async def do_cold(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        source, width, fm = rng.choice(SOURCES), rng.randint(100, 1600), rng.choice(FORMATS)
        return await self.get(session, f"/images/{source}?w={width}&fm={fm}&q={rng.randint(60, 90)}")

    async def do_range(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        start = rng.randrange(BIG_SIZE - 1)
        end = min(BIG_SIZE - 1, start + rng.randint(1, 256 * 1024))
        headers = {"Range": f"bytes={start}-{end}"}
        async with session.get(f"{self.base}/images/{BIG_BLOB}", headers=headers) as response:
            body = await response.read()
            if response.status == 206 and len(body) != end - start + 1:
                self.counts.wrong_bodies += 1
            return response.status

    async def do_upload(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        body = rng.randbytes(rng.randint(64 * 1024, 512 * 1024))
        async with session.post(f"{self.base}/upload", data=body) as response:
            answer = await response.json() if response.status == 200 else {}
            if response.status == 200 and answer.get("sha256") != hashlib.sha256(body).hexdigest():
                self.counts.wrong_bodies += 1
            return response.status

    async def do_page(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        return await self.get(session, f"/page/{rng.randrange(1000)}")

    async def do_purge(self, session: aiohttp.ClientSession, rng: random.Random) -> int:
        """As the app does: a 502 (applied where it landed, not everywhere) is sent again, up to
        PURGE_ATTEMPTS times; each 502's reason is counted."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        path = f"{self.base}/admin/cache/{pool_blob(rng.randrange(POOL))}"
        for attempt in range(PURGE_ATTEMPTS):
            async with session.delete(path, headers=headers) as response:
                answer = await response.json() if response.content_type == "application/json" else {}
                if response.status != 502 or attempt == PURGE_ATTEMPTS - 1:
                    return response.status
                reason = "not logged" if answer.get("logged") is False else "worker unreached"
                self.counts.purge_retries[reason] += 1
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, clients: int, until: float, seed: int = 22) -> None:
        """`clients` loops of actions until the monotonic time `until`."""
        timeout = aiohttp.ClientTimeout(total=60)

        async def client(index: int) -> None:
            rng = random.Random(seed * 100 + index)
            while time.monotonic() < until:
                await self.action(session, rng)

        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(client(index) for index in range(clients)))
