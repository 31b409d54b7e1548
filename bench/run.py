"""`make bench` / `python -m bench.run`: every part of the benchmark in one run, one report.

In order: seed Azurite; the cache part (`bench.cache`: imgproxy against nginx, Varnish and a bare
handler); the replicas (`bench.replicas`); the pass-through (`bench.passthrough`); the 200 MiB
memory figure; the transforms (`bench.transforms`). BENCH_BASELINE adds an older revision as
`imgproxy-base` beside `imgproxy` (`bench.baseline`, `bench.compare`). The result is
bench/results/<UTC time>.json (the record) and its Markdown rendering (`bench.render`) as .md.

What each part measures, the knobs (BENCH_*, IMGPROXY_BENCH_*) with their defaults, and the
current figures: docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from devtools.azurite import ROOT, AzuriteServer, free_port, run_azurite

from . import client
from .baseline import BASE_NAME, BASELINE_VAR, BaselineInfo, current, materialise
from .cache.measure import memory, run_targets
from .context import Run, Settings, log, one_line
from .dataset import seed
from .origin_counter import STATS_PATH
from .passthrough.measure import run_passthrough
from .procs import ManagedProcess, find_tool
from .render import render
from .replicas.measure import run_replicas, upload_bursts
from .report import Report, environment
from .targets import new_workdir
from .transforms.measure import run_transforms
from .wrk import wrk_binary

RESULTS: Final = Path(__file__).resolve().parent / "results"
APT_PACKAGES: Final = {"nginx": "nginx", "varnish": "varnishd", "wrk": "wrk"}


def ensure_tools(notes: list[str]) -> None:
    """apt-get install whatever of nginx, varnish and wrk is missing; never fatal."""
    missing = [package for package, binary in APT_PACKAGES.items() if find_tool(binary) is None]
    if not missing:
        return
    apt = find_tool("apt-get")
    if apt is None or os.geteuid() != 0:
        notes.append(f"could not install {', '.join(missing)}: needs apt-get as root")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", *missing]
    log(f"installing {' '.join(missing)} with apt-get")
    for attempt in range(2):
        try:
            if attempt == 1:
                subprocess.run([apt, "update"], env=env, timeout=300, check=False, capture_output=True)
            done = subprocess.run(install, env=env, timeout=600, check=False, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0:
            return
    still = [package for package, binary in APT_PACKAGES.items() if find_tool(binary) is None]
    if still:
        notes.append(f"apt-get could not install {', '.join(still)}")


@contextlib.contextmanager
def origin_counter(run: Run, azurite: AzuriteServer, workdir: Path) -> Iterator[tuple[str, int]]:
    """The counting proxy in front of Azurite, as its own process; yields (host, port)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.origin_counter", "--upstream", azurite.endpoint, "--port", str(port)]
    with ManagedProcess("origin-counter", argv, workdir / "origin-counter.log", cwd=ROOT) as proc:
        proc.wait_for_output("origin counter on", timeout=30)
        run.counter_url = f"http://127.0.0.1:{port}{STATS_PATH}"
        yield "127.0.0.1", port


def prepare_baseline(run: Run) -> None:
    """BENCH_BASELINE: this checkout's revision and the baseline's tree (written once into
    .cache/bench); both imgproxy targets then import their own tree (`bench/baseline.py`)."""
    settings = run.settings
    if not settings.cache_run or "imgproxy" not in (*settings.targets, *settings.pass_targets):
        run.report.notes.append(f"{BASELINE_VAR}={settings.baseline}: ignored, imgproxy does not run")
        return
    log(f"{BASELINE_VAR}={settings.baseline}: materialising its tree")
    try:
        run.new_code = current()
        run.base_code = materialise(settings.baseline)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(f"{BASELINE_VAR}={settings.baseline}: {exc}") from exc
    log(
        f"{BASE_NAME}: {run.base_code.revision.short} in {run.base_code.root}; "
        f"imgproxy: {run.new_code.revision.short} in {run.new_code.root}"
    )
    run.report.baseline = BaselineInfo(settings.baseline, run.new_code, run.base_code, {})


def cache_run(run: Run, azurite: AzuriteServer, workdir: Path) -> None:
    """Seed, then every cache target through every workload, the replicas (unless BENCH_REPLICAS
    is 0), the pass-through workloads and the 200 MiB memory figure."""
    settings, report = run.settings, run.report
    log(f"Azurite on {azurite.endpoint}; seeding")
    started = time.monotonic()
    targets = run.with_base(settings.targets)
    run.dataset = client.run(seed(azurite.connection_string, targets, settings.repeat, big=settings.memory))
    if settings.replicas != "0":
        client.run(upload_bursts(azurite.connection_string))
    log(f"seeded {len(run.dataset.sizes)} blobs in {time.monotonic() - started:.1f} s")
    with origin_counter(run, azurite, workdir) as counter:
        run_targets(run, azurite, counter, workdir)
        if settings.replicas != "0":
            run_replicas(run, counter, workdir)
    pass_dir = workdir / "passthrough"
    pass_dir.mkdir()
    run_passthrough(run, azurite, pass_dir)
    if not settings.memory:
        report.memory_note = "skipped (BENCH_MEMORY=0)"
        return
    try:
        memory_dir = workdir / "memory"
        memory_dir.mkdir()
        memory(run, azurite, memory_dir)
    except Exception as exc:
        report.memory_note = one_line(f"not measured: {type(exc).__name__}: {exc}")
        log(report.memory_note)


def replicas_only(run: Run, azurite: AzuriteServer, workdir: Path) -> None:
    """BENCH_REPLICAS=only: seed the images and the bursts, then the replicas alone."""
    run.dataset = client.run(seed(azurite.connection_string, [], run.settings.repeat, big=False))
    client.run(upload_bursts(azurite.connection_string))
    with origin_counter(run, azurite, workdir) as counter:
        run_replicas(run, counter, workdir)


def write_results(now: dt.datetime, text: str, data: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = now.strftime("%Y-%m-%dT%H-%M-%SZ")
    for suffix, content in ((".json", json.dumps(data, indent=1) + "\n"), (".md", text + "\n")):
        final = RESULTS / f"{stem}{suffix}"
        partial = final.with_name(final.name + ".tmp")
        partial.write_text(content)
        partial.replace(final)
    log(f"wrote {RESULTS / stem}.json (and its rendering, .md)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop every child on SIGTERM too (finally blocks)
    settings = Settings.from_env()
    began = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    report = Report(now.strftime("%Y-%m-%d %H:%M:%S UTC"), settings.describe())
    ensure_tools(report.notes)
    report.environment = environment()
    if wrk_binary() is None:
        report.notes.append(
            "wrk is not available: no throughput workloads, only the burst and memory figures"
        )
    run = Run(settings, report)
    if settings.baseline:
        prepare_baseline(run)
    with new_workdir() as tmp, run_azurite() as azurite:
        workdir = Path(tmp)
        if settings.cache_run:
            cache_run(run, azurite, workdir)
        elif settings.replicas == "only":
            replicas_only(run, azurite, workdir)
        if settings.transforms != "0" and settings.replicas != "only":
            run_transforms(run, azurite, workdir / "transforms")
    report.seconds = time.monotonic() - began
    data = json.loads(json.dumps(report.as_dict()))  # the record as written: the .md renders it alone
    text = render(data)
    write_results(now, text, data)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
