"""The pass-through workloads (`pass-1k`, `pass-1m`): every pass target in front of one app.

All targets are started at once and measured in turn within each repetition (interleaved, so that
a machine that gets busier during the run weighs on every target alike; an idle target costs
nothing): `wrk -c<BENCH_CONNECTIONS>` for throughput, then `wrk -c1` for the latency of one request
at a time. The rows go into the run's `Report` (`loads` and `single`).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path

from devtools.azurite import AzuriteServer

from .. import client
from ..baseline import BASE_NAME
from ..context import Run, in_turn, log
from ..report import LoadRow
from ..targets import Target
from ..wrk import fixed_script, run_wrk, wrk_binary
from .targets import PASS_FILES, run_imgproxy_pass, run_nginx_proxy, run_session_pass, run_static


def run_passthrough(run: Run, azurite: AzuriteServer, workdir: Path) -> None:
    settings = run.settings
    workloads = [w for w in settings.workloads if w in PASS_FILES]
    if not workloads or wrk_binary() is None:
        return
    script = fixed_script(workdir / "pass.lua")
    with run_static(workdir) as app, contextlib.ExitStack() as stack:
        targets: list[Target] = []
        for name in run.with_base(settings.pass_targets):
            try:
                target = stack.enter_context(start(run, name, azurite, app, workdir))
                check(target, workloads)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one that cannot start is skipped, never fatal
                run.failed(f"{name} (pass-through): skipped", exc)
                continue
            run.report.target_notes[f"{name} (pass-through)"] = target.notes
            run.record_imports(target)
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
                        loaded.runs.append(run_wrk(url, script, settings.duration_s, settings.connections))
                        single.runs.append(run_wrk(url, script, settings.duration_s, 1))
                    except Exception as exc:
                        run.failed(f"{target.name}: {workload} failed", exc)
        for loaded, single in rows.values():
            if loaded.runs and single.runs:
                run.report.loads.append(loaded)
                run.report.single.append(single)


def start(
    run: Run, name: str, azurite: AzuriteServer, app: Target, workdir: Path
) -> AbstractContextManager[Target]:
    if name == "imgproxy":
        return run_imgproxy_pass(azurite.connection_string, app, workdir, code=run.new_code)
    if name == BASE_NAME:
        return run_imgproxy_pass(azurite.connection_string, app, workdir, BASE_NAME, run.base_code)
    if name == "nginx":
        return run_nginx_proxy(app, workdir)
    if name == "session":
        return run_session_pass(app, workdir)
    return contextlib.nullcontext(app)


def check(target: Target, workloads: list[str]) -> None:
    """Each file comes through whole before it is measured."""
    for workload in workloads:
        file_name, size = PASS_FILES[workload]
        body = client.run(client.fetch_body(f"{target.base}/{file_name}"))
        if len(body) != size:
            raise RuntimeError(f"{target.name}: {file_name} gave {len(body)} bytes, not {size}")
