"""Child processes that are always stopped: output to a log file, readiness by polling, kill by group.

What the kernel says about a running process (peak RSS, CPU time, children) is in
`devtools.processes`, shared with the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


class ProcessError(RuntimeError):
    """A child did not start (the message carries the tail of its output)."""


class ManagedProcess:
    """A child in its own session (so its workers can be found and stopped), output in a file.

    Output goes to a file rather than a pipe: nothing can block on a full pipe and no reader thread
    is needed. `stop()` sends SIGTERM, waits, then SIGKILLs whatever is left of the process group.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ProcessError(f"{self.name} exited with status {self.proc.returncode}:\n{self.tail()}")

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until `text` appeared `count` times in the output (e.g. one per worker)."""
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            self._check_alive()
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name}: no {text!r} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def wait_for_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until `url` answers 2xx."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if 200 <= response.status < 300:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{self.name}: {url} did not answer 200 within {timeout:.0f} s:\n{self.tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the whole process group."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            # Workers or children that outlived their parent (same group: the session we created).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 0)
                os.killpg(self.proc.pid, signal.SIGKILL)
        finally:
            self._log.close()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def find_tool(name: str) -> str | None:
    """`name` on PATH, or in the sbin directories that a non-login root PATH may lack."""
    path = (
        os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(("/usr/sbin", "/sbin", "/usr/local/sbin"))
    )
    return shutil.which(name, path=path)
