"""`make image-test`: build the container image and check it end to end with podman.

No container registry is reachable from the build machines, so the base is made here from Debian
packages (mmdebstrap with the machine's apt sources, then `podman import`) unless `IMAGE_TEST_BASE`
names another (e.g. `python:3.11-slim-bookworm`, the Containerfile's default, where a registry is
reachable). Then: Azurite on the host, seeded; the image run with `--network host` against it;
read-only root and the disk tier on its volume, as deploy/kubernetes runs it;
an original fetched twice (MISS, HIT), a variant (`?w=100&fm=webp`, unsigned transforms on); the
image's HEALTHCHECK, user and PID 1 checked; `podman stop` (the image's STOPSIGNAL) and the drain:
`/readyz` 503 at once, exit status 0 within `drain_s` + a margin.

Needs root, podman, runc and mmdebstrap (installed with apt-get when missing, as root): not part of
`make test`. Exit status 0 when every check passed, 1 at the first failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from .azurite import ROOT, free_port, run_azurite
from .seed import IMAGES_DIR, seed

LOCAL_BASE: Final = "localhost/imgproxy-base:bookworm"
IMAGE: Final = "localhost/imgproxy:image-test"
CONTAINER: Final = "imgproxy-image-test"
APT_TOOLS: Final = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}
# What podman needs on these machines (the default crun runtime and ulimits fail in this sandbox).
PODMAN: Final = ("podman", "--runtime", "runc")
ULIMITS: Final = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
HOST_CA: Final = "/etc/ssl/certs/ca-certificates.crt"
APT_SOURCES: Final = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DRAIN_S: Final = 3.0
DRAIN_MARGIN_S: Final = 10.0  # exit within drain_s + this (start-up of the stop, loop teardown)
START_TIMEOUT_S: Final = 60.0
BLOB: Final = "demo/sunset.jpg"


class CheckFailed(Exception):
    """One expectation of the image was not met."""


def _run(
    args: Sequence[str], *, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(args), flush=True)
    return subprocess.run(list(args), check=check, text=True, capture_output=capture)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    print(f"ok: {what}", flush=True)


def ensure_tools() -> None:
    """podman, runc and mmdebstrap, from apt when missing (root only)."""
    missing = [package for tool, package in APT_TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise CheckFailed(
            f"missing {', '.join(missing)}: run as root (apt-get install -y {' '.join(missing)})"
        )
    _run(["apt-get", "install", "-y", *missing])


def _apt_sources() -> list[str]:
    """The machine's configured apt sources, as mmdebstrap takes them (one file each)."""
    files: list[str] = []
    for place in APT_SOURCES:
        candidates = sorted(place.iterdir()) if place.is_dir() else [place]
        files += [str(p) for p in candidates if p.is_file() and p.suffix in (".list", ".sources")]
    return [f for f in files if Path(f).stat().st_size > 0]


def ensure_local_base() -> str:
    """A bookworm base with python3, venv and CA certificates, built once and kept."""
    if _run([*PODMAN, "image", "exists", LOCAL_BASE], check=False).returncode == 0:
        return LOCAL_BASE
    with tempfile.TemporaryDirectory(prefix="imgproxy-base-") as tmp:
        tarball = str(Path(tmp) / "base.tar")
        _run(
            [
                "mmdebstrap",
                "--variant=apt",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                tarball,
                *_apt_sources(),
            ]
        )
        _run([*PODMAN, "import", tarball, LOCAL_BASE])
    return LOCAL_BASE


def build_image(base: str) -> None:
    """The Containerfile, in Docker format (OCI drops HEALTHCHECK), with the host's CA bundle."""
    _run(
        [
            *PODMAN,
            "build",
            "--format",
            "docker",
            "--network",
            "host",
            *ULIMITS,
            "--volume",
            f"{HOST_CA}:{HOST_CA}:ro",
            "--build-arg",
            f"BASE={base}",
            "--tag",
            IMAGE,
            "--file",
            str(ROOT / "Containerfile"),
            str(ROOT),
        ]
    )


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _poll(what: str, probe: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until `probe()` held (checked every 50 ms); CheckFailed past `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if probe():
                return time.monotonic() - start
        except OSError:  # refused or reset while the server starts or stops
            pass
        time.sleep(0.05)
    raise CheckFailed(f"{what} within {timeout_s:.0f} s")


def _webp_width(body: bytes) -> int:
    """Width of a lossy (VP8) or lossless (VP8L) WebP, from its header (RIFF, no decoder needed)."""
    if body[:4] != b"RIFF" or body[8:12] != b"WEBP":
        raise CheckFailed("the variant is a WebP file")
    chunk = body[12:16]
    if chunk == b"VP8 ":
        return int.from_bytes(body[26:28], "little") & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(body[21:25], "little")
        return (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(body[24:27], "little") + 1
    raise CheckFailed(f"unknown WebP chunk {chunk!r}")


def check_container(base_url: str, original: bytes) -> None:
    """What one running container must do, over HTTP and through podman."""
    waited = _poll("/healthz 200", lambda: _get(f"{base_url}/healthz")[0] == 200, START_TIMEOUT_S)
    print(f"ok: /healthz 200 after {waited:.1f} s", flush=True)
    _poll("/readyz 200", lambda: _get(f"{base_url}/readyz")[0] == 200, START_TIMEOUT_S)
    print("ok: /readyz 200 (the container reached Azurite on the host)", flush=True)

    status, headers, body = _get(f"{base_url}/images/{BLOB}")
    _expect(
        status == 200 and headers.get("X-Cache") == "MISS",
        f"first GET: 200 MISS ({status} {headers.get('X-Cache')})",
    )
    _expect(body == original, f"the bytes are the blob's ({len(body)} bytes)")
    status, headers, body = _get(f"{base_url}/images/{BLOB}")
    _expect(
        status == 200 and headers.get("X-Cache") == "HIT",
        f"second GET: 200 HIT ({status} {headers.get('X-Cache')})",
    )
    _expect(body == original, "the hit's bytes are the blob's")

    status, headers, body = _get(f"{base_url}/images/{BLOB}?w=100&fm=webp")
    _expect(
        status == 200 and headers.get("Content-Type") == "image/webp",
        f"variant ?w=100&fm=webp: 200 image/webp ({status} {headers.get('Content-Type')})",
    )
    _expect(_webp_width(body) == 100, f"the variant is 100 px wide ({len(body)} bytes)")
    status, headers, _ = _get(f"{base_url}/images/{BLOB}?w=100&fm=webp")
    _expect(status == 200 and headers.get("X-Cache") == "HIT", "the variant again: HIT")

    health = _run([*PODMAN, "healthcheck", "run", CONTAINER], check=False, capture=True)
    _expect(health.returncode == 0, f"the image's HEALTHCHECK passes (exit {health.returncode})")
    uid = _run([*PODMAN, "exec", CONTAINER, "id", "-u"], capture=True).stdout.strip()
    _expect(uid == "10001", f"runs as the non-root user (uid {uid})")
    pid1 = _run([*PODMAN, "exec", CONTAINER, "cat", "/proc/1/cmdline"], capture=True).stdout
    _expect("imgproxy" in pid1, f"PID 1 is the server ({pid1.replace(chr(0), ' ').strip()})")
    environ = _run([*PODMAN, "exec", CONTAINER, "cat", "/proc/1/environ"], capture=True).stdout
    _expect("MALLOC_ARENA_MAX=2" in environ.split("\0"), "MALLOC_ARENA_MAX=2 in the server's environment")
    files = _run([*PODMAN, "exec", CONTAINER, "find", "/var/cache/imgproxy", "-type", "f"], capture=True)
    _expect(bool(files.stdout.strip()), "the disk tier wrote to its volume on a read-only root")


def check_drain(base_url: str) -> None:
    """`podman stop` sends the image's STOPSIGNAL; the server drains and exits 0 on its own."""
    limit_s = DRAIN_S + DRAIN_MARGIN_S
    start = time.monotonic()
    stopper = subprocess.Popen([*PODMAN, "stop", "--time", str(int(limit_s)), CONTAINER])
    waited = _poll("/readyz 503 after SIGTERM", lambda: _get(f"{base_url}/readyz")[0] == 503, limit_s)
    print(f"ok: /readyz 503 {waited:.2f} s after the stop began (draining)", flush=True)
    status = _get(f"{base_url}/healthz")[0]
    _expect(status == 200, f"/healthz still 200 while draining ({status})")
    stopper.wait(timeout=limit_s + 30)
    elapsed = time.monotonic() - start
    code = _run(
        [*PODMAN, "inspect", "--format", "{{.State.ExitCode}}", CONTAINER], capture=True
    ).stdout.strip()
    _expect(code == "0", f"exit status 0 (not killed: {code})")
    _expect(
        DRAIN_S <= elapsed <= limit_s, f"stopped after {elapsed:.1f} s: drain_s {DRAIN_S} <= t <= {limit_s}"
    )
    logs = _run([*PODMAN, "logs", CONTAINER], capture=True)
    _expect("draining" in logs.stdout + logs.stderr, "the server logged its drain")


def main() -> int:
    try:
        ensure_tools()
        base = os.environ.get("IMAGE_TEST_BASE") or ensure_local_base()
        build_image(base)
        with run_azurite() as azurite:
            container = "images"
            asyncio.run(seed(azurite.connection_string, container))
            original = (IMAGES_DIR / Path(BLOB).name).read_bytes()
            port = free_port()
            _run([*PODMAN, "rm", "--force", "--ignore", CONTAINER], capture=True)
            _run(
                [
                    *PODMAN,
                    "run",
                    "--detach",
                    "--name",
                    CONTAINER,
                    "--network",
                    "host",
                    *ULIMITS,
                    # As deploy/kubernetes runs it: a read-only root (podman mounts /tmp as tmpfs),
                    # the disk tier on the image's volume.
                    "--read-only",
                    "--env",
                    "IMGPROXY_DISK_ENABLED=true",
                    "--env",
                    f"IMGPROXY_ORIGIN_CONNECTION_STRING={azurite.connection_string}",
                    "--env",
                    f"IMGPROXY_ORIGIN_CONTAINER={container}",
                    "--env",
                    f"IMGPROXY_SERVER_PORT={port}",
                    "--env",
                    f"IMGPROXY_SERVER_DRAIN_S={DRAIN_S}",
                    "--env",
                    "IMGPROXY_TRANSFORM_ENABLED=true",
                    "--env",
                    "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED=true",
                    IMAGE,
                ]
            )
            try:
                base_url = f"http://127.0.0.1:{port}"
                check_container(base_url, original)
                check_drain(base_url)
            except CheckFailed:
                _run([*PODMAN, "logs", CONTAINER], check=False)
                raise
            finally:
                _run([*PODMAN, "rm", "--force", "--ignore", CONTAINER], check=False, capture=True)
    except (CheckFailed, subprocess.CalledProcessError) as exc:
        print(f"image-test FAILED: {exc}", file=sys.stderr)
        return 1
    print("image-test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
