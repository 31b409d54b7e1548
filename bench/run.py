"""`make bench` / `python -m bench.run`: run every target through every workload and write a report.

Environment: BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (64), BENCH_REPEAT (1; the median is
reported), BENCH_TARGETS (imgproxy,nginx,varnish,bare), BENCH_WORKLOADS (hit-20k,hit-2m,zipf,burst,
pass-1k,pass-1m; also hit-200k and stream-20m), BENCH_PASS_TARGETS (imgproxy,nginx,session,direct:
the pass-through workloads' targets, see `bench.passthrough`), BENCH_MEMORY (1; 0 skips the 200 MiB
figure and the transforms' 24 MP memory figure), IMGPROXY_BENCH_EXTRA_ENV ("KEY=VALUE ..." passed to
imgproxy, e.g. IMGPROXY_SERVER_WORKERS=2).

Replicas (`bench/replicas.py`): BENCH_REPLICAS=1 (default) also runs three replicas behind nginx
in three setups (round-robin without and with Redis, consistent hashing without), each from cold
with the same BENCH_REPLICA_REQUESTS (30000) requests of the Zipf mix, the cold bursts over the
replicas and BENCH_REPLICA_PURGES (200) purges for the propagation; 0 skips it; `only` runs
nothing else (no targets, no memory figure). nginx's configuration comes from
`deploy/nginx-replicas.conf`.

Image transforms (issue 12; `bench/transform_bench.py`), in the same run and report:
BENCH_TRANSFORMS (1: after the cache workloads, the default; 0: none; only: the transform
workloads alone), BENCH_TRANSFORM_CASES (12mp-jpeg,12mp-webp,2.5mp-800-jpeg,png-alpha,12mp-avif),
BENCH_TRANSFORM_TARGETS (imgproxy,thumbor,limit), BENCH_TRANSFORM_CONNECTIONS (8: wrk connections
of the cold runs; warm runs use BENCH_CONNECTIONS), BENCH_TRANSFORM_SECONDS (3: the in-process
limit's loop per library and repetition), IMGPROXY_BENCH_TRANSFORM_ENV ("KEY=VALUE ..." for the
transform imgproxy only, e.g. IMGPROXY_TRANSFORM_MAX_CONCURRENCY=1). thumbor 7.8.0 is installed
into .cache/bench/thumbor-venv (bench/thumbor-requirements.txt) on first use.

`only` in BENCH_REPLICAS or BENCH_TRANSFORMS runs that part alone.

Same run before/after (`bench/baseline.py`): BENCH_BASELINE=<git revision> (empty: off) writes that
revision's tree into .cache/bench/baseline-<short sha> (`git archive`, reused; the checkout is left
alone) and runs it as the target `imgproxy-base` with `imgproxy`'s settings (same env and workers, its
own config.toml, PYTHONPATH = its tree; `imgproxy` gets PYTHONPATH = this checkout, and each
one's `imgproxy.__file__` is checked before it starts). It joins every cache workload and the
pass-through workloads wherever `imgproxy` runs, the two measured back to back in each repetition,
first one then the other first (BENCH_REPEAT=3: new, base; base, new; new, base). The section
"Against the baseline <rev>" gives both revisions (HEAD's with `-dirty` if the tree has changes) and per
workload both medians of req/s and p99 and their ratios new / base.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devtools.azurite import ACCOUNT, ROOT, AzuriteServer, connection_string, free_port, run_azurite

from . import client
from .baseline import BASE_NAME, BASELINE_VAR, BaselineInfo, Code, current, materialise
from .dataset import BIG_BLOB, BIG_SIZE, BURST_SIZE, CONTAINER, OBJECTS, Dataset, burst_name, seed
from .origin_counter import STATS_PATH
from .passthrough import (
    PASS_FILES,
    PASS_TARGETS,
    run_imgproxy_pass,
    run_nginx_proxy,
    run_session_pass,
    run_static,
)
from .procs import ManagedProcess, descendants, find_tool, peak_rss_bytes
from .replica_report import ReplicaReport, render_replicas
from .replicas import ReplicaBench, ReplicaSettings, upload_bursts
from .report import BurstRow, LoadRow, MemoryFigure, Report, environment, render
from .targets import EXTRA_ENV_VAR, Target, new_workdir, run_bare, run_imgproxy, run_nginx, run_varnish
from .transform_bench import TransformBench, TransformSettings
from .transform_figures import TransformReport
from .wrk import fixed_script, mix_script, run_wrk, wrk_binary

RESULTS: Final = Path(__file__).resolve().parent / "results"
ALL_TARGETS: Final = ("imgproxy", "nginx", "varnish", "bare")
FIXED_WORKLOADS: Final = {
    "hit-20k": "obj-20k.bin",
    "hit-200k": "obj-200k.bin",
    "hit-2m": "obj-2m.bin",
    "stream-20m": "obj-20m.bin",
}
ALL_WORKLOADS: Final = (*FIXED_WORKLOADS, "zipf", "burst", *PASS_FILES)
BURST_CLIENTS: Final = 100
MEMORY_CLIENTS: Final = 20
APT_PACKAGES: Final = {"nginx": "nginx", "varnish": "varnishd", "wrk": "wrk"}
REPLICA_MODES: Final = ("1", "0", "only")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Settings:
    duration_s: int
    connections: int
    repeat: int
    targets: list[str]
    workloads: list[str]
    memory: bool
    pass_targets: list[str]
    transforms: str  # BENCH_TRANSFORMS: "1", "0" or "only"
    replicas: str = "1"  # BENCH_REPLICAS: 1, 0 or only
    replica_requests: int = 30_000
    replica_purges: int = 200
    baseline: str = ""  # BENCH_BASELINE: a git revision measured next to this checkout, or ""

    @classmethod
    def from_env(cls) -> Settings:
        def listing(name: str, default: str, allowed: tuple[str, ...]) -> list[str]:
            items = [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]
            unknown = [x for x in items if x not in allowed]
            if unknown:
                raise SystemExit(f"{name}: unknown {unknown}; choose from {', '.join(allowed)}")
            return items

        settings = cls(
            duration_s=int(os.environ.get("BENCH_DURATION", "10")),
            connections=int(os.environ.get("BENCH_CONNECTIONS", "64")),
            repeat=int(os.environ.get("BENCH_REPEAT", "1")),
            targets=listing("BENCH_TARGETS", ",".join(ALL_TARGETS), ALL_TARGETS),
            workloads=listing("BENCH_WORKLOADS", "hit-20k,hit-2m,zipf,burst,pass-1k,pass-1m", ALL_WORKLOADS),
            memory=os.environ.get("BENCH_MEMORY", "1") not in ("0", "false", "no"),
            pass_targets=listing("BENCH_PASS_TARGETS", ",".join(PASS_TARGETS), PASS_TARGETS),
            replicas=os.environ.get("BENCH_REPLICAS", "1").strip().lower(),
            replica_requests=int(os.environ.get("BENCH_REPLICA_REQUESTS", "30000")),
            replica_purges=int(os.environ.get("BENCH_REPLICA_PURGES", "200")),
            transforms=os.environ.get("BENCH_TRANSFORMS", "1").strip().lower(),
            baseline=os.environ.get(BASELINE_VAR, "").strip(),
        )
        if settings.transforms not in ("1", "0", "only"):
            raise SystemExit("BENCH_TRANSFORMS must be 1, 0 or only")
        if settings.duration_s < 1 or settings.connections < 1 or settings.repeat < 1:
            raise SystemExit("BENCH_DURATION, BENCH_CONNECTIONS and BENCH_REPEAT must be >= 1")
        if settings.replicas not in REPLICA_MODES:
            raise SystemExit(f"BENCH_REPLICAS: {settings.replicas!r}; choose from {', '.join(REPLICA_MODES)}")
        if settings.replica_requests < 1 or settings.replica_purges < 0:
            raise SystemExit("BENCH_REPLICA_REQUESTS must be >= 1 and BENCH_REPLICA_PURGES >= 0")
        return settings

    @property
    def cache_run(self) -> bool:
        """Whether the cache targets, the pass-through and the memory figure run (not when a part
        runs alone)."""
        return self.replicas != "only" and self.transforms != "only"

    def describe(self) -> dict[str, str]:
        return {
            "duration": f"{self.duration_s}s",
            "connections": str(self.connections),
            "wrk threads": "1",
            "repeat": str(self.repeat),
            "targets": ",".join(self.targets),
            "workloads": ",".join(self.workloads) if self.cache_run else "(none: one part only)",
            "pass targets": ",".join(self.pass_targets),
            "transforms": self.transforms,
            EXTRA_ENV_VAR: os.environ.get(EXTRA_ENV_VAR, "") or "(none)",
            BASELINE_VAR: self.baseline or "(none)",
            "replicas": self.replicas
            + (
                f" ({self.replica_requests} requests, {self.replica_purges} purges)"
                if self.replicas != "0"
                else ""
            ),
        }


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
def origin_counter(azurite: AzuriteServer, workdir: Path) -> Iterator[tuple[str, int]]:
    """The counting proxy in front of Azurite, as its own process; yields (host, port)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.origin_counter", "--upstream", azurite.endpoint, "--port", str(port)]
    with ManagedProcess("origin-counter", argv, workdir / "origin-counter.log", cwd=ROOT) as proc:
        proc.wait_for_output("origin counter on", timeout=30)
        yield "127.0.0.1", port


def one_line(message: str, limit: int = 400) -> str:
    """A multi-line error (e.g. with a child's output) as one Markdown-safe line."""
    return " / ".join(line.strip() for line in message.splitlines() if line.strip())[:limit]


def warm_passes(caches: int, blobs: int) -> int:
    """Warm-up passes so that about one (blob, cache) pair stays cold when requests land at random.

    One pass for one cache (the brief's "one warm-up request per object"); for N caches behind a
    SO_REUSEPORT port each pass misses a given cache with probability 1 - 1/N. At most 30.
    """
    if caches <= 1:
        return 1
    return min(30, math.ceil(math.log(caches * blobs) / -math.log(1 - 1 / caches)))


class Bench:
    def __init__(self, settings: Settings, report: Report) -> None:
        self.settings = settings
        self.report = report
        self.dataset = Dataset()
        self.counter_url = ""
        self.new_code: Code | None = None  # BENCH_BASELINE: this checkout, and the baseline's tree
        self.base_code: Code | None = None

    def with_base(self, names: list[str]) -> list[str]:
        """`names` with `imgproxy-base` right after `imgproxy` (BENCH_BASELINE), so that the two are
        measured back to back."""
        if self.base_code is None or "imgproxy" not in names:
            return list(names)
        at = names.index("imgproxy") + 1
        return [*names[:at], BASE_NAME, *names[at:]]

    def record_imports(self, target: Target) -> None:
        """BENCH_BASELINE: which tree a started imgproxy imports (checked before its start)."""
        if self.report.baseline is not None and target.imports:
            log(f"{target.name}: imgproxy imported from {target.imports}")
            self.report.baseline.imports[target.name] = target.imports

    def origin_total(self) -> int:
        return sum(client.run(client.origin_stats(self.counter_url)).values())

    def start(
        self, name: str, azurite: AzuriteServer, counter: tuple[str, int], workdir: Path
    ) -> AbstractContextManager[Target]:
        host, port = counter
        if name == "imgproxy":
            return run_imgproxy(connection_string(f"http://{host}:{port}"), workdir, code=self.new_code)
        if name == BASE_NAME:
            return run_imgproxy(
                connection_string(f"http://{host}:{port}"), workdir, name=BASE_NAME, code=self.base_code
            )
        if name == "nginx":
            return run_nginx(host, port, workdir)
        if name == "varnish":
            return run_varnish(host, port, workdir)
        names = [n for n in self.dataset.sizes if n != BIG_BLOB]
        return run_bare(f"{azurite.endpoint}/{ACCOUNT}/{CONTAINER}", names, workdir)

    def run_targets(self, targets: list[Target], workdir: Path) -> None:
        """Warm every target, then each workload's repetitions with the targets in turn within each
        (one target as before; `imgproxy` and `imgproxy-base` with BENCH_BASELINE)."""
        settings = self.settings
        for target in targets:
            self.warm_up(target)
        for workload in settings.workloads:
            if workload == "burst" or workload in PASS_FILES or wrk_binary() is None:
                continue
            try:
                self.run_load(targets, workload, workdir)
            except Exception as exc:
                self.failed(f"{', '.join(t.name for t in targets)}: {workload} failed", exc)
        if "burst" in settings.workloads:
            for repetition in range(settings.repeat):
                for target in targets:
                    try:
                        self.run_burst(target, repetition)
                    except Exception as exc:
                        self.failed(f"{target.name}: burst #{repetition + 1} failed", exc)

    def warm_up(self, target: Target) -> None:
        settings = self.settings
        self.report.target_notes[target.name] = target.notes
        self.record_imports(target)
        warm_names = {name: self.dataset.sizes[name] for name in (*OBJECTS, *self.dataset.images)}
        check = [FIXED_WORKLOADS[w] for w in settings.workloads if w in FIXED_WORKLOADS]
        if "zipf" in settings.workloads:
            check += list(dict.fromkeys(self.dataset.zipf_paths))[:20]
        passes = warm_passes(target.separate_caches, len(warm_names))
        log(f"{target.name}: warm-up, {len(warm_names)} blobs x {passes} pass(es)")
        warm = client.run(client.warm(target.base, warm_names, check, passes))
        mix = ", ".join(f"{k} {v}" for k, v in sorted(warm.x_cache_after.items()))
        self.report.warm[target.name] = (
            f"{passes} pass(es), {warm.requests} requests; then X-Cache of {len(check)} load paths: {mix}"
        )
        if warm.bad:
            self.report.notes.append(f"{target.name}: warm-up answers wrong: {'; '.join(warm.bad[:5])}")

    def failed(self, what: str, exc: Exception) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"
        log(message)
        self.report.notes.append(one_line(message))

    def run_burst(self, target: Target, repetition: int) -> None:
        blob = burst_name(target.name, repetition)
        before = client.run(client.origin_stats(self.counter_url))
        log(f"{target.name}: cold burst of {BURST_CLIENTS} GETs of {blob}")
        result = client.run(client.burst(f"{target.base}/images/{blob}", BURST_CLIENTS, BURST_SIZE))
        after = client.run(client.origin_stats(self.counter_url))
        delta = after - before
        gets = delta[f"GET {blob}"]
        other = sum(v for k, v in delta.items() if k.endswith(f" {blob}")) - gets
        self.report.bursts.setdefault(target.name, []).append(BurstRow(target.name, result, gets, other))

    def run_load(self, targets: list[Target], workload: str, workdir: Path) -> None:
        """`workload`'s repetitions, the targets in turn within each; a target whose run fails loses
        this workload (its row is left out, as before), the others go on."""
        settings = self.settings
        script_dir = workdir / "lua"
        script_dir.mkdir(exist_ok=True)
        if workload == "zipf":
            script = mix_script(script_dir / "zipf.lua", [f"/images/{p}" for p in self.dataset.zipf_paths])
            path = "/"
            mean = self.dataset.mean_size(self.dataset.zipf_paths)
        else:
            script = fixed_script(script_dir / "fixed.lua")
            path = f"/images/{FIXED_WORKLOADS[workload]}"
            mean = float(self.dataset.sizes[FIXED_WORKLOADS[workload]])
        rows = {target.name: LoadRow(target.name, workload, mean) for target in targets}
        for repetition in range(settings.repeat):
            for target in in_turn(targets, repetition):
                row = rows.get(target.name)
                if row is None:
                    continue
                run = f"run {repetition + 1}/{settings.repeat} ({settings.duration_s} s)"
                log(f"{target.name}: {workload} {run}")
                try:
                    before = self.origin_total()
                    row.runs.append(
                        run_wrk(target.base + path, script, settings.duration_s, settings.connections)
                    )
                    row.origin_requests.append(self.origin_total() - before)
                except Exception as exc:  # one failed workload must not cost the others
                    self.failed(f"{target.name}: {workload} failed", exc)
                    del rows[target.name]
        self.report.loads.extend(rows.values())

    def run_passthrough(self, azurite: AzuriteServer, workdir: Path) -> None:
        """The pass-through workloads: every pass target in front of one static app, all started at
        once and measured in turn within each repetition (interleaved, so that a machine that gets
        busier during the run weighs on every target alike; an idle target costs nothing)."""
        settings = self.settings
        workloads = [w for w in settings.workloads if w in PASS_FILES]
        if not workloads or wrk_binary() is None:
            return
        script = fixed_script(workdir / "pass.lua")
        with run_static(workdir) as app, contextlib.ExitStack() as stack:
            targets: list[Target] = []
            for name in self.with_base(settings.pass_targets):
                try:
                    target = stack.enter_context(self.start_pass(name, azurite, app, workdir))
                    self.check_pass(target, workloads)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # one that cannot start is skipped, never fatal
                    self.failed(f"{name} (pass-through): skipped", exc)
                    continue
                self.report.target_notes[f"{name} (pass-through)"] = target.notes
                self.record_imports(target)
                targets.append(target)
            rows = {
                (t.name, w): (
                    LoadRow(t.name, w, float(PASS_FILES[w][1])),
                    LoadRow(t.name, w, float(PASS_FILES[w][1])),
                )
                for w in workloads
                for t in targets
            }
            for repetition in range(settings.repeat):
                for workload in workloads:
                    for target in in_turn(targets, repetition):
                        log(f"{target.name}: {workload} run {repetition + 1}/{settings.repeat}")
                        url = f"{target.base}/{PASS_FILES[workload][0]}"
                        loaded, single = rows[(target.name, workload)]
                        try:
                            loaded.runs.append(
                                run_wrk(url, script, settings.duration_s, settings.connections)
                            )
                            single.runs.append(run_wrk(url, script, settings.duration_s, 1))
                        except Exception as exc:
                            self.failed(f"{target.name}: {workload} failed", exc)
            for loaded, single in rows.values():
                if loaded.runs and single.runs:
                    self.report.loads.append(loaded)
                    self.report.single.append(single)

    def start_pass(
        self, name: str, azurite: AzuriteServer, app: Target, workdir: Path
    ) -> AbstractContextManager[Target]:
        if name == "imgproxy":
            return run_imgproxy_pass(azurite.connection_string, app, workdir, code=self.new_code)
        if name == BASE_NAME:
            return run_imgproxy_pass(azurite.connection_string, app, workdir, BASE_NAME, self.base_code)
        if name == "nginx":
            return run_nginx_proxy(app, workdir)
        if name == "session":
            return run_session_pass(app, workdir)
        return contextlib.nullcontext(app)

    def check_pass(self, target: Target, workloads: list[str]) -> None:
        """Each file comes through whole before it is measured."""
        for workload in workloads:
            file_name, size = PASS_FILES[workload]
            body = client.run(client.fetch_body(f"{target.base}/{file_name}"))
            if len(body) != size:
                raise RuntimeError(f"{target.name}: {file_name} gave {len(body)} bytes, not {size}")

    def memory_figure(self, azurite: AzuriteServer, workdir: Path) -> None:
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
        self.report.memory = MemoryFigure(idle, peak, streams, BIG_SIZE)


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
    bench = Bench(settings, report)
    if settings.baseline:
        prepare_baseline(bench)
    replica_report: ReplicaReport | None = None
    with new_workdir() as tmp, run_azurite() as azurite:
        workdir = Path(tmp)
        if settings.cache_run:
            replica_report = run_cache_workloads(bench, azurite, workdir)
        elif settings.replicas == "only":
            replica_report = run_replicas_only(bench, azurite, workdir)
        if settings.transforms != "0" and settings.replicas != "only":
            run_transform_workloads(settings, report, azurite, workdir / "transforms")
    report.seconds = time.monotonic() - began
    text = render(report)
    data = report.as_dict()
    if replica_report is not None:
        text += "\n" + render_replicas(replica_report)
        data["replicas"] = replica_report.as_dict()
    write_results(now, text, data)
    print(text)
    return 0


def prepare_baseline(bench: Bench) -> None:
    """BENCH_BASELINE: this checkout's revision and the baseline's tree (written once into
    .cache/bench); both imgproxy targets then import their own tree (`bench/baseline.py`)."""
    settings = bench.settings
    if not settings.cache_run or "imgproxy" not in (*settings.targets, *settings.pass_targets):
        bench.report.notes.append(f"{BASELINE_VAR}={settings.baseline}: ignored, imgproxy does not run")
        return
    log(f"{BASELINE_VAR}={settings.baseline}: materialising its tree")
    try:
        bench.new_code = current()
        bench.base_code = materialise(settings.baseline)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(f"{BASELINE_VAR}={settings.baseline}: {exc}") from exc
    log(
        f"{BASE_NAME}: {bench.base_code.revision.short} in {bench.base_code.root}; "
        f"imgproxy: {bench.new_code.revision.short} in {bench.new_code.root}"
    )
    bench.report.baseline = BaselineInfo(settings.baseline, bench.new_code, bench.base_code, {})


def in_turn(targets: list[Target], repetition: int) -> list[Target]:
    """The order of one repetition: as listed, then reversed, and so on (A B, B A, A B, ...), so
    that neither of two targets compared side by side always runs first (the first run after a
    pause measured lower here, on both sides alike)."""
    return targets if repetition % 2 == 0 else targets[::-1]


def run_cache_workloads(bench: Bench, azurite: AzuriteServer, workdir: Path) -> ReplicaReport | None:
    """Seed, then every cache target through every workload, the replicas (unless BENCH_REPLICAS
    is 0), the pass-through workloads and the 200 MiB memory figure."""
    settings, report = bench.settings, bench.report
    log(f"Azurite on {azurite.endpoint}; seeding")
    started = time.monotonic()
    bench.dataset = client.run(
        seed(
            azurite.connection_string, bench.with_base(settings.targets), settings.repeat, big=settings.memory
        )
    )
    if settings.replicas != "0":
        client.run(upload_bursts(azurite.connection_string))
    log(f"seeded {len(bench.dataset.sizes)} blobs in {time.monotonic() - started:.1f} s")
    replica_report: ReplicaReport | None = None
    with origin_counter(azurite, workdir) as counter:
        bench.counter_url = f"http://{counter[0]}:{counter[1]}{STATS_PATH}"
        for name in settings.targets:
            (workdir / name).mkdir()
            try:
                with contextlib.ExitStack() as stack:
                    targets = [stack.enter_context(bench.start(name, azurite, counter, workdir / name))]
                    if name == "imgproxy" and bench.base_code is not None:  # the two side by side
                        base = start_beside(bench, stack, azurite, counter, workdir)
                        targets += [base] if base is not None else []
                    bench.run_targets(targets, workdir / name)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # an anchor that cannot start is skipped, never fatal
                bench.failed(f"{name}: skipped or incomplete", exc)
        if settings.replicas != "0":
            replica_report = run_replicas(bench, counter, workdir)
    pass_dir = workdir / "passthrough"
    pass_dir.mkdir()
    bench.run_passthrough(azurite, pass_dir)
    if settings.memory:
        try:
            memory_dir = workdir / "memory"
            memory_dir.mkdir()
            bench.memory_figure(azurite, memory_dir)
        except Exception as exc:
            report.memory_note = one_line(f"not measured: {type(exc).__name__}: {exc}")
            log(report.memory_note)
    else:
        report.memory_note = "skipped (BENCH_MEMORY=0)"
    return replica_report


def start_beside(
    bench: Bench,
    stack: contextlib.ExitStack[bool | None],
    azurite: AzuriteServer,
    counter: tuple[str, int],
    workdir: Path,
) -> Target | None:
    """imgproxy-base, started next to imgproxy (own directory, so own disk tier if that is on);
    None, with a note, if it cannot start (imgproxy is measured alone then)."""
    (workdir / BASE_NAME).mkdir()
    try:
        return stack.enter_context(bench.start(BASE_NAME, azurite, counter, workdir / BASE_NAME))
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        bench.failed(f"{BASE_NAME}: skipped", exc)
        return None


def run_replicas_only(bench: Bench, azurite: AzuriteServer, workdir: Path) -> ReplicaReport | None:
    """BENCH_REPLICAS=only: seed the images and the bursts, then the replicas alone."""
    bench.dataset = client.run(seed(azurite.connection_string, [], bench.settings.repeat, big=False))
    client.run(upload_bursts(azurite.connection_string))
    bench.report.memory_note = ""  # the section is left out
    with origin_counter(azurite, workdir) as counter:
        bench.counter_url = f"http://{counter[0]}:{counter[1]}{STATS_PATH}"
        return run_replicas(bench, counter, workdir)


def run_replicas(bench: Bench, counter: tuple[str, int], workdir: Path) -> ReplicaReport | None:
    """Three replicas behind nginx in three setups (bench/replicas.py); None if it could not run."""
    settings = bench.settings
    replica_dir = workdir / "replicas"
    replica_dir.mkdir()
    replica_settings = ReplicaSettings(
        settings.replica_requests, settings.connections, settings.replica_purges
    )
    origin = connection_string(f"http://{counter[0]}:{counter[1]}")
    try:
        return ReplicaBench(
            replica_settings, bench.dataset.images, origin, bench.counter_url, replica_dir, log
        ).run()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        bench.failed("replicas: skipped or incomplete", exc)
        return None


def run_transform_workloads(
    settings: Settings, report: Report, azurite: AzuriteServer, workdir: Path
) -> None:
    """imgproxy's transforms against thumbor and the in-process limit (bench/transform_bench.py)."""
    import PIL
    import pyvips

    transforms = report.transforms = TransformReport()
    libvips = ".".join(str(pyvips.version(i)) for i in range(3))
    transforms.versions = {
        "pyvips": f"{pyvips.__version__} (libvips {libvips})",
        "Pillow (the limit's)": PIL.__version__,
    }
    tx_settings = TransformSettings.from_env(
        settings.duration_s, settings.repeat, settings.connections, settings.memory
    )
    try:
        TransformBench(tx_settings, transforms, log).run(azurite.connection_string, workdir)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the cache figures are still worth writing
        message = one_line(f"transform workloads stopped: {type(exc).__name__}: {exc}")
        log(message)
        transforms.notes.append(message)


def write_results(now: dt.datetime, text: str, data: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = now.strftime("%Y-%m-%dT%H-%M-%SZ")
    for suffix, content in ((".md", text + "\n"), (".json", json.dumps(data, indent=1) + "\n")):
        final = RESULTS / f"{stem}{suffix}"
        partial = final.with_name(final.name + ".tmp")
        partial.write_text(content)
        partial.replace(final)
    log(f"wrote {RESULTS / stem}.md (and .json)")


if __name__ == "__main__":
    sys.exit(main())
