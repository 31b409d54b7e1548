"""What the kernel says about a running process: its peak memory, its CPU time, its children.

Shared by the tests (`tests/helpers.py`) and the bench (`bench/`); Linux only (`/proc`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), from the kernel."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for pid {pid}")


def descendants(pid: int) -> list[int]:
    """`pid`'s children, grandchildren and so on (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    todo.append(int(child))
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    return [pid, *descendants(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids` (each with all its threads); gone ones count 0."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks
