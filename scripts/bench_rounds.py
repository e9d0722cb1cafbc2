"""Paired rounds for ``scripts/bench.py``: every system measured in short blocks, round
after round, in the same minutes.

On this VM the speed of a minute moves any system's figures by 20-30 %, so cells measured
minutes apart compare minutes, not systems. Here each cell is the pool of its blocks over
``rounds`` rounds, and in every round each system runs a block of each concurrency. While
one system runs a block the others are paused with SIGSTOP (``paused``): raw engines run
on a quiet machine as the issue's bar did, and the platform's idle background neither
slows the others nor is counted in their CPU. A pause lasts one block (seconds at most),
far inside every health check's timeout; the bench checks the platform is ready after.

Throughput is the steady state of the closed loop: in a block of N calls from c workers,
the completions after the c-th and up to the (N-c)-th — while exactly c calls are in
flight — over the time between them. The loop filling at the start and draining at the
end are not counted (the drain alone cost a batching server ~5 % of a 128-call cell).
Latency percentiles pool every call of every block; CPU per image counts every call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SETTLE_S = 0.3  # after a resume, before a block: the resumed processes' loops catch up first


@dataclass
class Cell:
    system: str
    imgsz: int
    concurrency: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    images_s: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per image, by process role
    # raw engines: the least CPU per image over the thread counts tried (the engine's own
    # cost, against which the platform's serving CPU is counted)
    frugal_cpu_ms: float | None = None
    # paired cells: every image over the blocks' whole time, the filling and draining in
    whole_images_s: float | None = None


@dataclass
class Block:
    """One closed-loop block: each call's latency, the steady-state part (images and
    seconds), every image, and the CPU seconds each process (``role#pid``) spent."""

    latencies_s: list[float]
    steady_images: int
    steady_s: float
    images: int
    cpu_s: dict[str, float]
    seconds: float  # the whole block


def steady_window(completions: Sequence[float], conc: int, start: float) -> tuple[int, float]:
    """Calls and seconds of a closed loop's steady state, from its sorted completion
    times: with one worker every call from ``start``; with c workers the completions
    after the c-th up to the (N-c)-th, when the last call was issued (each of the first
    N-c completions issued the next call)."""
    if conc == 1:
        return len(completions), completions[-1] - start
    first, last = conc - 1, len(completions) - conc - 1
    if last <= first:
        raise ValueError(f"a block of {len(completions)} calls has no steady state at {conc}")
    return last - first, completions[last] - completions[first]


def run_block(
    call: Callable[[bytes], Any],
    images: list[bytes],
    calls: int,
    conc: int,
    per_call: int = 1,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> Block:
    """``calls`` calls from ``conc`` workers, each starting its next call when one returns
    (images round-robin); ``per_call`` images a call. A call that raises (a refused
    request) stops the block and is raised here: a block never counts a call not served."""
    latencies: list[float] = []
    done: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(calls))

    def worker() -> None:
        while True:
            with lock:
                i = None if errors else next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            try:
                call(images[i % len(images)])
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return
            finished = time.perf_counter()
            with lock:
                latencies.append(finished - started)
                done.append(finished)

    before = cpu() if cpu is not None else {}
    start = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(conc)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - start
    after = cpu() if cpu is not None else {}
    if calls > 2 * conc:
        steady_calls, steady_s = steady_window(sorted(done), conc, start)
    else:  # too short to leave the filling and draining out: the whole block
        steady_calls, steady_s = calls, seconds
    spent = {key: t - before.get(key, 0.0) for key, t in after.items()}
    return Block(latencies, steady_calls * per_call, steady_s, calls * per_call, spent, seconds)


def cell(system: str, imgsz: int, conc: int, blocks: list[Block]) -> Cell:
    """The pool of a system's blocks at one concurrency: percentiles over every call,
    images/s over the steady parts, CPU per image by role (``role#pid`` keys summed)."""
    ordered = sorted(t for b in blocks for t in b.latencies_s)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    images = sum(b.images for b in blocks)
    cpu_ms: dict[str, float] = {}
    for block in blocks:
        for key, seconds in block.cpu_s.items():
            role = key.split("#", 1)[0]
            cpu_ms[role] = cpu_ms.get(role, 0.0) + seconds * 1e3 / images
    rate = sum(b.steady_images for b in blocks) / sum(b.steady_s for b in blocks)
    whole = images / sum(b.seconds for b in blocks)
    return Cell(system, imgsz, conc, statistics.median(ordered) * 1e3, pct(0.95), pct(0.99),
                rate, cpu_ms, whole_images_s=whole)  # fmt: skip


def pids_matching(marks: Sequence[str]) -> list[int]:
    """Every process but this one whose command line contains one of ``marks``."""
    import psutil

    me = os.getpid()
    return [
        p.pid
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid != me and any(m in " ".join(p.info["cmdline"] or []) for m in marks)
    ]


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """Every process in ``pids`` stopped for the block, resumed whatever happens, then
    ``SETTLE_S`` for their loops to catch up before anything is measured."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        threading.Event().wait(SETTLE_S)
