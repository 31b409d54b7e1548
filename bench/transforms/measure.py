"""The transform workloads of `make bench`: imgproxy against thumbor and the in-process limit.

One imgproxy (`server.workers` = cores, transforms on, unsigned parameters allowed) and two thumbor
clusters (result storage off, for cold runs; on, for warm runs) run side by side, idle unless
measured. For each repetition and case, in turn: the in-process limit (pyvips, Pillow, our
engine, the pool; `bench.transforms.limit.measure`, one round), imgproxy cold, thumbor cold, so
load from elsewhere falls on all of them alike. Cold runs are wrk with one thread and
`BENCH_TRANSFORM_CONNECTIONS` connections whose Lua script asks for a new variant every request
(`bench.transforms.cases`: a box side that is in both servers' keys but cannot change the output).
Then the warm runs (variant hits; an original of the variant's bytes; thumbor's result
storage), the latency of cached hits while cold transforms run, and the memory of a fresh imgproxy
through 16 concurrent cold transforms of 24 MP JPEGs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final, TypeVar

from devtools.azurite import AzuriteServer
from devtools.processes import cpu_seconds, descendants, peak_rss_bytes, process_tree

from .. import client
from ..context import Run, log, one_line
from ..targets import Target, run_imgproxy
from ..wrk import counter_script, fixed_script, paced_script, run_wrk
from .cases import (
    JSON_COPIES_PER_REPEAT,
    RSS_QUERIES,
    RSS_REQUESTS,
    TRANSFORM_CASES,
    TransformCase,
    fill,
    rss_blob,
    split,
)
from .figures import CaseFigures, HitsUnderLoad, Load, RssFigure, TransformReport
from .limit import measure
from .seed import HIT_BLOB, HIT_SIZE, source_blobs, upload, upload_copies, write_files
from .settings import TransformSettings, ambient_busy, cores, transform_env
from .thumbor import ThumborCluster, run_thumbor, versions

PROBER_CONNECTIONS: Final = 4
PROBER_DELAY_MS: Final = 10
WARM_PASSES: Final = 20  # new connections per warm-up: every worker's own cache gets the entry
T = TypeVar("T")
EXTENSIONS: Final = {"jpeg": ".jpg", "webp": ".webp", "png": ".png", "avif": ".avif", "json": ".json"}


def pixel_size(case: TransformCase, body: bytes) -> tuple[int, int]:
    """The answer's pixel size; for fm=json, the size the description gives for the source."""
    if case.limit.fmt == "json":
        facts = json.loads(body)
        return int(facts["width"]), int(facts["height"])
    import pyvips

    image = pyvips.Image.new_from_buffer(body, "")
    return image.width, image.height


class TransformBench:
    def __init__(
        self, settings: TransformSettings, report: TransformReport, log: Callable[[str], None]
    ) -> None:
        self.s = settings
        self.report = report
        self.log = log
        self.cases = [TRANSFORM_CASES[slug] for slug in settings.cases]
        self.figures = {case.slug: CaseFigures(case.slug, case.limit.name) for case in self.cases}
        self.report.cases = list(self.figures.values())
        self.next_n: dict[tuple[str, str], int] = {}  # (server, case) -> next cold counter value
        self.source_sizes: dict[str, int] = {}
        self.workdir = Path()

    def mark(self, when: str) -> None:
        self.report.loadavg.append(f"{when} {os.getloadavg()[0]:.2f}")

    def run(self, connection_string: str, workdir: Path) -> None:
        """Every transform figure; a part that fails becomes a note, the rest still runs."""
        r, s = self.report, self.s
        self.workdir = workdir
        busy = ambient_busy()
        r.settings["machine before the transform workloads"] = f"{busy:.0%} of the cores busy over 2 s"
        self.mark("start")
        # The hits-under-load figure runs cold 12mp-jpeg transforms whatever the cases.
        blobs = source_blobs([*self.cases, TRANSFORM_CASES["12mp-jpeg"]], rss=s.rss)
        self.source_sizes = {name: len(data) for name, data in blobs.items()}
        sources = workdir / "sources"
        write_files(self.cases, sources)
        client.run(upload(connection_string, blobs))
        del blobs
        for case in self.cases:
            if case.varies == "source":  # enough copies that no cold request meets one twice
                copies = JSON_COPIES_PER_REPEAT * s.repeat
                client.run(upload_copies(connection_string, case, copies))
                r.settings[f"{case.slug} sources"] = (
                    f"{copies} copies of {case.limit.source} as distinct blobs; a cold request is the "
                    "description of a source no worker holds yet (its Azurite GET included)"
                )
        env = transform_env()
        r.settings["imgproxy"] = " ".join(f"{k}={v}" for k, v in env.items()) + (
            f"; transform.max_concurrency 0 (per worker: 2 per usable core, {2 * cores()}), "
            "memory tier only, sources from Azurite"
        )
        r.settings["load"] = (
            f"cold: wrk -t1 -c{s.connections}, {s.duration_s} s, a new variant per request (unsigned URLs); "
            f"warm and original hits: wrk -t1 -c{s.warm_connections}, {s.duration_s} s; "
            f"BENCH_REPEAT={s.repeat} (medians); limit: {s.limit_seconds:g} s per library per repetition"
        )
        with contextlib.ExitStack() as stack:
            imgproxy = self.start(
                stack, "imgproxy", lambda: run_imgproxy(connection_string, workdir, "imgproxy-tx", env)
            )
            cold = self.start(
                stack, "thumbor", lambda: run_thumbor(sources, workdir / "thumbor-cold", False, cores())
            )
            warm = self.start(
                stack, "thumbor", lambda: run_thumbor(sources, workdir / "thumbor-warm", True, cores())
            )
            if cold is not None:
                r.versions.update({f"thumbor's venv: {k}": v for k, v in versions().items()})
                r.settings["thumbor"] = "; ".join(cold.notes) + " (cold runs; warm runs: file result storage)"
            self.guard("checks", lambda: self.check(imgproxy, cold))
            for repetition in range(s.repeat):
                for case in self.cases:
                    self.mark(f"cold {case.slug} #{repetition + 1}")
                    self.guard(f"cold {case.slug}", functools.partial(self.cold_round, case, imgproxy, cold))
            for case in self.cases:
                self.mark(f"warm {case.slug}")
                warm_case = functools.partial(self.warm_case, case, imgproxy, warm, connection_string)
                self.guard(f"warm {case.slug}", warm_case)
            if imgproxy is not None:
                self.mark("hits under load")
                self.guard("hits under transform load", lambda: self.hits_under_load(imgproxy))
        if s.rss and "imgproxy" in s.targets:
            self.mark("memory")
            self.guard("memory figure", lambda: self.memory(connection_string, workdir))
        elif not s.rss:
            r.rss_note = "skipped (BENCH_MEMORY=0)"
        self.mark("end")
        r.processes = cores()

    def start(
        self, stack: contextlib.ExitStack, target: str, factory: Callable[[], AbstractContextManager[T]]
    ) -> T | None:
        if target not in self.s.targets:
            return None
        try:
            return stack.enter_context(factory())
        except Exception as exc:  # an anchor that cannot start is left out, never fatal
            self.note(f"{target} not started", exc)
            return None

    def note(self, what: str, exc: Exception) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"
        self.log(message)
        self.report.notes.append(" / ".join(x.strip() for x in message.splitlines() if x.strip())[:400])

    def guard(self, what: str, action: Callable[[], None]) -> None:
        """Run `action`; a failure becomes a report note (one figure must not cost the others)."""
        try:
            action()
        except Exception as exc:
            self.note(f"{what} failed", exc)

    def check(self, imgproxy: Target | None, thumbor: ThumborCluster | None) -> None:
        """Sources into every imgproxy worker; each case's answer (status, type, pixel size) per server;
        and that a cold URL (another `n`) gives the same pixel size as the warm one."""
        if imgproxy is not None:
            sizes = {case.blob: self.source_sizes[case.blob] for case in self.cases}
            client.run(client.warm(imgproxy.base, sizes, [], passes=WARM_PASSES))
        for case in self.cases:
            servers: list[tuple[str, str]] = []
            if imgproxy is not None:
                servers.append(("imgproxy", imgproxy.base + case.imgproxy_template()))
            if thumbor is not None and case.thumbor:
                servers.append(("thumbor", thumbor.base + case.thumbor_template(thumbor.static_host)))
            for server, template in servers:
                urls = [fill(template, case.first)]
                if case.varies != "source":  # a copy's description is a cold request: not spent here
                    urls.append(fill(template, case.first + 99_000))
                bodies: dict[str, bytes] = {}
                answers = client.run(client.get_all(urls, body_to=bodies))
                shapes = []
                for answer in answers:
                    if answer.status != 200 or answer.content_type != case.content_type:
                        self.report.notes.append(
                            f"{server} {case.slug}: {answer.status} {answer.content_type} for {answer.url}"
                        )
                        continue
                    shapes.append(pixel_size(case, bodies[answer.url]))
                if len(shapes) == 2 and shapes[0] != shapes[1]:
                    self.report.notes.append(f"{server} {case.slug}: cold {shapes[1]} != warm {shapes[0]}")
                if shapes:
                    figures = self.figures[case.slug]
                    figures.output_bytes[server] = len(bodies[urls[0]]) if urls[0] in bodies else 0
                    figures.output_pixels[server] = f"{shapes[0][0]}x{shapes[0][1]}"

    def cold_round(
        self, case: TransformCase, imgproxy: Target | None, thumbor: ThumborCluster | None
    ) -> None:
        figures = self.figures[case.slug]
        if "limit" in self.s.targets:
            self.log(f"limit: {case.limit.name}")
            rows, overheads = measure(self.s.limit_seconds, cores(), (case.limit,), rounds=1)
            figures.limits.append(rows[0])
            figures.overhead = overheads[0]
            for library, size in rows[0].output_bytes.items():
                figures.output_bytes[f"in-process {library}"] = size
        if imgproxy is not None:
            pids = process_tree(imgproxy.process.pid)
            self.cold_run(
                "imgproxy", case, imgproxy.base, case.imgproxy_template(), figures.imgproxy_cold, pids
            )
        if thumbor is not None and case.thumbor:
            template = case.thumbor_template(thumbor.static_host)
            self.cold_run("thumbor", case, thumbor.base, template, figures.thumbor_cold, thumbor.pids())

    def cold_run(
        self, server: str, case: TransformCase, base: str, template: str, into: Load, pids: list[int]
    ) -> None:
        """One wrk run of new variants into `into`, with the CPU that `pids` used meanwhile; the
        counter goes on from where the last run of this (server, case) ended."""
        prefix, suffix = split(template)
        key = (server, case.slug)
        start = self.next_n.get(key, case.first + 1)
        script = counter_script(self.lua(f"cold-{server}-{case.slug}.lua"), prefix, start, suffix)
        self.log(f"{server}: cold {case.slug} from n={start} ({self.s.duration_s} s, -c{self.s.connections})")
        cpu_before = cpu_seconds(pids)
        result = run_wrk(base + "/", script, self.s.duration_s, self.s.connections)
        cpu = cpu_seconds(pids) - cpu_before
        # Requests still in flight when wrk stopped used numbers too: skip past them.
        self.next_n[key] = start + result.requests + self.s.connections + 16
        into.runs.append(result)
        if cpu > 0:
            into.cpu_rates.append(result.requests / cpu * cores())

    def lua(self, name: str) -> Path:
        directory = self.workdir / "lua"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / name

    def warm_case(
        self,
        case: TransformCase,
        imgproxy: Target | None,
        thumbor: ThumborCluster | None,
        connection_string: str,
    ) -> None:
        """Variant hits, hits of an original of the variant's own bytes, thumbor's result storage."""
        figures = self.figures[case.slug]
        script = fixed_script(self.lua("fixed.lua"))
        runs: list[tuple[Load, str]] = []
        if imgproxy is not None:
            path = fill(case.imgproxy_template(), case.first)
            bodies: dict[str, bytes] = {}
            client.run(client.get_all([imgproxy.base + path], body_to=bodies))
            body = bodies[imgproxy.base + path]
            original = f"tx/same/{case.slug}{EXTENSIONS[case.limit.fmt]}"
            client.run(upload(connection_string, {original: body}))
            variant = path.removeprefix("/images/")
            for name in (variant, original):
                warmed = client.run(client.warm(imgproxy.base, {name: len(body)}, [name], passes=WARM_PASSES))
                if warmed.bad or set(warmed.x_cache_after) != {"HIT"}:
                    self.report.notes.append(f"warm-up of {name}: {warmed.bad} {dict(warmed.x_cache_after)}")
            runs += [
                (figures.imgproxy_warm, imgproxy.base + path),
                (figures.original_hits, f"{imgproxy.base}/images/{original}"),
            ]
        if thumbor is not None and case.thumbor:
            url = thumbor.base + fill(case.thumbor_template(thumbor.static_host), case.first)
            answers = client.run(client.get_all([url] * WARM_PASSES))
            if any(a.status != 200 for a in answers):
                self.report.notes.append(f"thumbor warm-up of {case.slug}: {[a.status for a in answers]}")
            runs.append((figures.thumbor_warm, url))
        for repetition in range(self.s.repeat):
            for load, url in runs:  # interleaved, so that load from elsewhere falls on all alike
                self.log(f"warm {case.slug} #{repetition + 1}: {url}")
                load.runs.append(run_wrk(url, script, self.s.duration_s, self.s.warm_connections))

    def hits_under_load(self, imgproxy: Target) -> None:
        """A paced prober on a cached 20 KiB original: alone, then while cold 12 MP transforms run."""
        hits = self.report.hits = HitsUnderLoad()
        client.run(client.warm(imgproxy.base, {HIT_BLOB: HIT_SIZE}, [HIT_BLOB], passes=WARM_PASSES))
        prober = paced_script(self.lua("paced.lua"), PROBER_DELAY_MS)
        url = f"{imgproxy.base}/images/{HIT_BLOB}"
        case = TRANSFORM_CASES["12mp-jpeg"]
        probe_s = max(1, self.s.duration_s - 2)
        for repetition in range(self.s.repeat):
            self.log(f"hits: idle prober #{repetition + 1}")
            hits.idle.runs.append(run_wrk(url, prober, probe_s, PROBER_CONNECTIONS))
            self.log(f"hits: prober while cold {case.slug} runs #{repetition + 1}")
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                template, pids = case.imgproxy_template(), process_tree(imgproxy.process.pid)
                load = pool.submit(
                    self.cold_run, "imgproxy", case, imgproxy.base, template, hits.transforms, pids
                )
                time.sleep(1)  # the prober starts once the transforms fill the slots, and ends before them
                probe = pool.submit(run_wrk, url, prober, probe_s, PROBER_CONNECTIONS)
                hits.loaded.runs.append(probe.result(timeout=probe_s + 120))
                load.result(timeout=self.s.duration_s + 120)
        self.report.settings["hit prober"] = (
            f"wrk -t1 -c{PROBER_CONNECTIONS}, {PROBER_DELAY_MS} ms pause before each request per connection, "
            f"{probe_s} s, on {HIT_BLOB} (cached); under load: inside a cold {case.slug} run"
        )

    def memory(self, connection_string: str, workdir: Path) -> None:
        """Peak RSS of a fresh imgproxy through 16 concurrent cold transforms of 16 24 MP sources."""
        with run_imgproxy(connection_string, workdir, "imgproxy-rss", transform_env()) as target:
            pids = [target.process.pid, *descendants(target.process.pid)]
            idle = {pid: peak_rss_bytes(pid) for pid in pids}
            urls = [
                f"{target.base}/images/{rss_blob(i)}?{RSS_QUERIES[i % len(RSS_QUERIES)]}"
                for i in range(RSS_REQUESTS)
            ]
            started = time.perf_counter()
            answers = client.run(client.get_all(urls, timeout_s=120))
            seconds = time.perf_counter() - started
            peak = {pid: peak_rss_bytes(pid) for pid in pids}
        if len(pids) > 1:  # a supervisor plus workers: the supervisor serves nothing
            idle.pop(pids[0])
            peak.pop(pids[0])
        self.report.rss = RssFigure(idle, peak, answers, seconds)


def run_transforms(run: Run, azurite: AzuriteServer, workdir: Path) -> None:
    """imgproxy's transforms against thumbor and the in-process limit, into `run.report.transforms`."""
    import PIL
    import pyvips

    settings = run.settings
    transforms = run.report.transforms = TransformReport()
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
