"""Instructions per plain hit, counted by callgrind: a figure this noisy machine repeats exactly.

    python -m bench.cache.instructions [TREE ...]    (default: this checkout)

For each tree (a checkout of this repository, e.g. one `BENCH_BASELINE` materialised under
.cache/bench/), `python -m imgproxy` runs under `valgrind --tool=callgrind` in front of Azurite, one
20 KiB blob is cached, then one client on one kept-alive connection asks for it `FEW` times in one
run and `MANY` times in another; the difference of the two runs' instruction totals, divided by
`MANY - FEW`, is what one hit costs (start-up and shutdown cancel out). wrk's req/s between two
processes of the same code differ by up to a fifth here (process placement, the other sessions);
these counts do not, so a change to the hit path is judged by them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import aiohttp
from azure.storage.blob.aio import BlobServiceClient

from devtools.azurite import ROOT, free_port, run_azurite

CONTAINER: Final = "instructions"
FEW: Final = 100
MANY: Final = 1100


async def seed(connection_string: str) -> None:
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        container = service.get_container_client(CONTAINER)
        if not await container.exists():
            await container.create_container()
        await container.upload_blob("x.bin", os.urandom(20 * 1024), overwrite=True)


async def ask(base: str, times: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(times):
            async with session.get(f"{base}/images/x.bin") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")


def instructions(tree: Path, connection_string: str, hits: int, out: Path) -> int:
    """The instruction total of one server run answering `hits` hits (after its one miss)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "IMGPROXY_ORIGIN_CONNECTION_STRING": connection_string,
        "IMGPROXY_ORIGIN_CONTAINER": CONTAINER,
        "IMGPROXY_SERVER_PORT": str(port),
        "IMGPROXY_SERVER_DRAIN_S": "0",
    }
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "imgproxy"]
    proc = subprocess.Popen(
        [*argv, "--config", str(tree / "config.toml")], env=env, cwd=tree, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving on" in line:
            break
    asyncio.run(ask(f"http://127.0.0.1:{port}", 1 + hits))
    proc.send_signal(signal.SIGTERM)
    proc.stderr.read()
    proc.wait()
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no total in {out}")
    return int(match.group(1))


def main() -> int:
    trees = [Path(arg).resolve() for arg in sys.argv[1:]] or [ROOT]
    workdir = ROOT / ".cache" / "bench" / "callgrind"
    workdir.mkdir(parents=True, exist_ok=True)
    with run_azurite() as azurite:
        asyncio.run(seed(azurite.connection_string))
        print("| tree | instructions per hit |\n| --- | ---: |")
        for index, tree in enumerate(trees):
            few = instructions(tree, azurite.connection_string, FEW, workdir / f"{index}-few.out")
            many = instructions(tree, azurite.connection_string, MANY, workdir / f"{index}-many.out")
            print(f"| {tree} | {(many - few) / (MANY - FEW):,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
