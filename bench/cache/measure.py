"""The cache workloads: every target warmed, then wrk on hits, the cold bursts, the memory figure.

Targets (BENCH_TARGETS) run one after the other, each in front of the counting proxy; with
BENCH_BASELINE, `imgproxy-base` runs beside `imgproxy`, the two measured in turn within each
repetition. The rows go into the run's `Report` (`loads`, `bursts`, `memory`).
"""

from __future__ import annotations

import contextlib
import math
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

from devtools.azurite import ACCOUNT, AzuriteServer, connection_string
from devtools.processes import descendants, peak_rss_bytes

from .. import client
from ..baseline import BASE_NAME
from ..context import FIXED_WORKLOADS, Run, in_turn, log
from ..dataset import BIG_BLOB, BIG_SIZE, BURST_SIZE, CONTAINER, OBJECTS, burst_name
from ..passthrough.targets import PASS_FILES
from ..report import LoadRow
from ..targets import Target, run_imgproxy
from ..wrk import fixed_script, mix_script, run_wrk, wrk_binary
from .anchors import run_bare, run_nginx, run_varnish
from .figures import BurstRow, MemoryFigure

BURST_CLIENTS: Final = 100
MEMORY_CLIENTS: Final = 20


def warm_passes(caches: int, blobs: int) -> int:
    """Warm-up passes so that about one (blob, cache) pair stays cold when requests land at random.

    One pass for one cache (one warm-up request per object); for N caches behind a SO_REUSEPORT
    port each pass misses a given cache with probability 1 - 1/N. At most 30.
    """
    if caches <= 1:
        return 1
    return min(30, math.ceil(math.log(caches * blobs) / -math.log(1 - 1 / caches)))


def run_targets(run: Run, azurite: AzuriteServer, counter: tuple[str, int], workdir: Path) -> None:
    """Every cache target in turn (imgproxy with imgproxy-base beside it under BENCH_BASELINE)."""
    for name in run.settings.targets:
        (workdir / name).mkdir()
        try:
            with contextlib.ExitStack() as stack:
                targets = [stack.enter_context(start(run, name, azurite, counter, workdir / name))]
                if name == "imgproxy" and run.base_code is not None:  # the two side by side
                    base = start_beside(run, stack, azurite, counter, workdir)
                    targets += [base] if base is not None else []
                measure(run, targets, workdir / name)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # an anchor that cannot start is skipped, never fatal
            run.failed(f"{name}: skipped or incomplete", exc)


def start(
    run: Run, name: str, azurite: AzuriteServer, counter: tuple[str, int], workdir: Path
) -> AbstractContextManager[Target]:
    host, port = counter
    if name == "imgproxy":
        return run_imgproxy(connection_string(f"http://{host}:{port}"), workdir, code=run.new_code)
    if name == BASE_NAME:
        return run_imgproxy(
            connection_string(f"http://{host}:{port}"), workdir, name=BASE_NAME, code=run.base_code
        )
    if name == "nginx":
        return run_nginx(host, port, workdir)
    if name == "varnish":
        return run_varnish(host, port, workdir)
    names = [n for n in run.dataset.sizes if n != BIG_BLOB]
    return run_bare(f"{azurite.endpoint}/{ACCOUNT}/{CONTAINER}", names, workdir)


def start_beside(
    run: Run,
    stack: contextlib.ExitStack[bool | None],
    azurite: AzuriteServer,
    counter: tuple[str, int],
    workdir: Path,
) -> Target | None:
    """imgproxy-base, started next to imgproxy (own directory, so own disk tier if that is on);
    None, with a note, if it cannot start (imgproxy is measured alone then)."""
    (workdir / BASE_NAME).mkdir()
    try:
        return stack.enter_context(start(run, BASE_NAME, azurite, counter, workdir / BASE_NAME))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        run.failed(f"{BASE_NAME}: skipped", exc)
        return None


def measure(run: Run, targets: list[Target], workdir: Path) -> None:
    """Warm every target, then each workload's repetitions with the targets in turn within each
    (one target, or `imgproxy` and `imgproxy-base` with BENCH_BASELINE), then the bursts."""
    settings = run.settings
    for target in targets:
        warm_up(run, target)
    for workload in settings.workloads:
        if workload == "burst" or workload in PASS_FILES or wrk_binary() is None:
            continue
        try:
            load(run, targets, workload, workdir)
        except Exception as exc:
            run.failed(f"{', '.join(t.name for t in targets)}: {workload} failed", exc)
    if "burst" in settings.workloads:
        for repetition in range(settings.repeat):
            for target in targets:
                try:
                    burst(run, target, repetition)
                except Exception as exc:
                    run.failed(f"{target.name}: burst #{repetition + 1} failed", exc)


def warm_up(run: Run, target: Target) -> None:
    settings, dataset = run.settings, run.dataset
    run.report.target_notes[target.name] = target.notes
    run.record_imports(target)
    warm_names = {name: dataset.sizes[name] for name in (*OBJECTS, *dataset.images)}
    check = [FIXED_WORKLOADS[w] for w in settings.workloads if w in FIXED_WORKLOADS]
    if "zipf" in settings.workloads:
        check += list(dict.fromkeys(dataset.zipf_paths))[:20]
    passes = warm_passes(target.separate_caches, len(warm_names))
    log(f"{target.name}: warm-up, {len(warm_names)} blobs x {passes} pass(es)")
    warm = client.run(client.warm(target.base, warm_names, check, passes))
    mix = ", ".join(f"{k} {v}" for k, v in sorted(warm.x_cache_after.items()))
    run.report.warm[target.name] = (
        f"{passes} pass(es), {warm.requests} requests; then X-Cache of {len(check)} load paths: {mix}"
    )
    if warm.bad:
        run.report.notes.append(f"{target.name}: warm-up answers wrong: {'; '.join(warm.bad[:5])}")


def burst(run: Run, target: Target, repetition: int) -> None:
    blob = burst_name(target.name, repetition)
    before = client.run(client.origin_stats(run.counter_url))
    log(f"{target.name}: cold burst of {BURST_CLIENTS} GETs of {blob}")
    result = client.run(client.burst(f"{target.base}/images/{blob}", BURST_CLIENTS, BURST_SIZE))
    after = client.run(client.origin_stats(run.counter_url))
    delta = after - before
    gets = delta[f"GET {blob}"]
    other = sum(v for k, v in delta.items() if k.endswith(f" {blob}")) - gets
    run.report.bursts.setdefault(target.name, []).append(BurstRow(target.name, result, gets, other))


def load(run: Run, targets: list[Target], workload: str, workdir: Path) -> None:
    """`workload`'s repetitions, the targets in turn within each; a target whose run fails loses
    this workload (its row is left out), the others go on."""
    settings, dataset = run.settings, run.dataset
    script_dir = workdir / "lua"
    script_dir.mkdir(exist_ok=True)
    if workload == "zipf":
        script = mix_script(script_dir / "zipf.lua", [f"/images/{p}" for p in dataset.zipf_paths])
        path = "/"
        mean = dataset.mean_size(dataset.zipf_paths)
    else:
        script = fixed_script(script_dir / "fixed.lua")
        path = f"/images/{FIXED_WORKLOADS[workload]}"
        mean = float(dataset.sizes[FIXED_WORKLOADS[workload]])
    rows = {target.name: LoadRow(target.name, workload, mean) for target in targets}
    for repetition in range(settings.repeat):
        for target in in_turn(targets, repetition):
            row = rows.get(target.name)
            if row is None:
                continue
            log(f"{target.name}: {workload} run {repetition + 1}/{settings.repeat} ({settings.duration_s} s)")
            try:
                before = run.origin_total()
                row.runs.append(
                    run_wrk(target.base + path, script, settings.duration_s, settings.connections)
                )
                row.origin_requests.append(run.origin_total() - before)
            except Exception as exc:  # one failed workload must not cost the others
                run.failed(f"{target.name}: {workload} failed", exc)
                del rows[target.name]
    run.report.loads.extend(rows.values())


def memory(run: Run, azurite: AzuriteServer, workdir: Path) -> None:
    """Peak RSS of a fresh imgproxy while 20 clients stream the 200 MiB blob (BENCH_MEMORY)."""
    log(f"memory: {MEMORY_CLIENTS} clients streaming {BIG_BLOB} through a fresh imgproxy")
    with run_imgproxy(azurite.connection_string, workdir, name="imgproxy-mem") as target:
        pids = [target.process.pid, *descendants(target.process.pid)]
        idle = {pid: peak_rss_bytes(pid) for pid in pids}
        streams = client.run(
            client.streams(f"{target.base}/images/{BIG_BLOB}", MEMORY_CLIENTS, BIG_SIZE, timeout_s=240)
        )
        peak = {pid: peak_rss_bytes(pid) for pid in pids}
    if len(pids) > 1:  # a supervisor plus workers: the supervisor serves nothing, leave it out
        idle.pop(pids[0])
        peak.pop(pids[0])
    run.report.memory = MemoryFigure(idle, peak, streams, BIG_SIZE)
