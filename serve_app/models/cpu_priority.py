"""A replica's CPU priority: the shared pool yields the CPU to reserved tenants.

Ray's ``num_cpus`` is bookkeeping for placement: it enforces nothing at run time, so on
a node the shared pool's inference threads compete with a dedicated tenant's as equals
(docs/isolation.md). Where tenants share a node, the platform lowers the pool
replica's scheduling priority (a Linux nice value): while a dedicated tenant's replica
or the router wants the CPU the kernel gives it ~10x the pool's share (nice 10 weighs
110 against nice 0's 1024), and when they are idle the pool still gets every spare
cycle (the scheduler is work-conserving). Raising one's own nice value needs no
privilege.

On Linux a nice value belongs to a thread, and a new thread inherits its creator's: so
every thread of the process is reniced, once at start and again after each model load
(an engine's thread pool may have been started by a thread created earlier).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("ray.serve")
TASKS = Path("/proc/self/task")


def lower_priority(nice: int) -> int:
    """Renice every thread of this process to at least ``nice`` (never back down: a
    process may not raise its own priority without privilege). Returns how many threads
    were changed; 0 where there is nothing to do or no ``/proc`` (not Linux)."""
    if nice <= 0 or not TASKS.is_dir():
        return 0
    changed = 0
    for task in TASKS.iterdir():
        tid = int(task.name)
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (ProcessLookupError, PermissionError):  # exited meanwhile / not allowed
            continue
    return changed


def thread_priorities() -> list[int]:
    """The nice value of every thread of this process (for tests and ``describe``)."""
    values = []
    for task in TASKS.iterdir() if TASKS.is_dir() else ():
        try:
            values.append(os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except ProcessLookupError:
            continue
    return values
