"""BENCH_BASELINE=<git revision>: an older revision of imgproxy measured next to this one, same run.

The revision's tree is written with `git archive | tar -x` into `.cache/bench/baseline-<short sha>`
(reused when complete; the checkout, its index and the repository's worktree list are left alone)
and started as the target `imgproxy-base` with `imgproxy`'s settings: the same environment and
workers, the `config.toml` of its own tree, and `PYTHONPATH` = that tree, so that `python -m imgproxy`
imports it rather than the venv's editable install. `imgproxy` gets `PYTHONPATH` = this checkout in
the same way. Before either starts, the same interpreter with the same environment and working
directory imports `imgproxy` and prints `imgproxy.__file__`, which must lie in the expected tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devtools.azurite import ROOT

from .procs import ProcessError

BASELINE_VAR: Final = "BENCH_BASELINE"
BASE_NAME: Final = "imgproxy-base"
CACHE: Final = ROOT / ".cache" / "bench"
COMPLETE: Final = ".bench-baseline"  # written last into a materialised tree: its full sha
PROBE: Final = "import imgproxy; print(imgproxy.__file__)"


@dataclass(frozen=True, slots=True)
class Revision:
    """A commit as the report names it."""

    sha: str
    subject: str = ""
    dirty: bool = False  # the tree differs from the commit (the current checkout only)

    @property
    def short(self) -> str:
        return self.sha[:12] + ("-dirty" if self.dirty else "")

    def as_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, "dirty": self.dirty, "subject": self.subject, "label": self.short}


@dataclass(frozen=True, slots=True)
class Code:
    """The tree an imgproxy target imports (`PYTHONPATH`) and whose `config.toml` it reads."""

    root: Path
    revision: Revision

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.root)}


@dataclass(slots=True)
class BaselineInfo:
    """What the report says about the two revisions (`imports`: target -> `imgproxy.__file__`)."""

    requested: str  # BENCH_BASELINE as given, e.g. HEAD~1
    new: Code
    base: Code
    imports: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "new": {**self.new.revision.as_dict(), "root": str(self.new.root)},
            "base": {**self.base.revision.as_dict(), "root": str(self.base.root)},
            "imports": self.imports,
        }


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def is_dirty(porcelain: str) -> bool:
    """From `git status --porcelain`: a tracked file differs from HEAD, or an untracked file lies in
    `imgproxy/` (code the target would import); other untracked files (results, notes) do not count."""
    for line in porcelain.splitlines():
        if not line.strip():
            continue
        if not line.startswith("?? "):
            return True
        if line[3:].strip('"').startswith("imgproxy/"):
            return True
    return False


def revision(rev: str) -> Revision:
    """`rev` resolved to a commit (SystemExit if it is none)."""
    try:
        sha = git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except RuntimeError as exc:
        raise SystemExit(f"{BASELINE_VAR}={rev!r} is not a commit of {ROOT}: {exc}") from None
    return Revision(sha, git("log", "-1", "--format=%s", sha))


def current() -> Code:
    """This checkout: HEAD, `-dirty` if it has changes."""
    head = revision("HEAD")
    dirty = is_dirty(git("status", "--porcelain"))
    return Code(ROOT, Revision(head.sha, head.subject, dirty))


def materialise(rev: str, cache: Path = CACHE) -> Code:
    """`rev`'s tree in `cache/baseline-<short sha>`, written once (into a temporary sibling, renamed
    into place when complete) and reused while its marker holds the sha."""
    found = revision(rev)
    target = cache / f"baseline-{found.sha[:12]}"
    marker = target / COMPLETE
    if marker.is_file() and marker.read_text().strip() == found.sha:
        return Code(target, found)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar", found.sha], cwd=ROOT, stdout=subprocess.PIPE
        )
        try:
            untar = subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout, check=False)
        finally:
            assert archive.stdout is not None
            archive.stdout.close()
            archive.wait(timeout=120)
        if archive.returncode != 0 or untar.returncode != 0:
            raise RuntimeError(
                f"git archive {found.sha} | tar -x: status {archive.returncode}, {untar.returncode}"
            )
        (partial / COMPLETE).write_text(found.sha + "\n")
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier attempt
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Code(target, found)


def imported_from(env: Mapping[str, str], cwd: Path) -> str:
    """`imgproxy.__file__` as `python -m imgproxy` with this environment and directory would see it."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ProcessError(f"importing imgproxy failed: {done.stderr.strip()[-1000:]}")
    return done.stdout.strip().splitlines()[-1]


def verify(code: Code, env: Mapping[str, str], cwd: Path) -> str:
    """The imgproxy that `env` and `cwd` import must be `code`'s; returns its `__file__`."""
    path = imported_from(env, cwd)
    if not Path(path).resolve().is_relative_to(code.root.resolve()):
        raise ProcessError(f"imgproxy would be imported from {path}, not from {code.root}")
    return path
