"""A router replica's write-ahead record of what it answered, for billing after a crash.

The ledger charges admissions when it grants them and holds them against the router
that asked (its *origin*) until that router settles: answered images are billed, the
rest refunded. A router killed with SIGKILL settles nothing, so before answering each
request it appends one line to this journal (one ``write`` to a file on the node's own
disk, no ``fsync``: the page cache outlives the process). A journal is cut into
segments numbered like the router's settlements; a segment goes once the ledger has
acknowledged its settlement.

Every router holds an exclusive ``flock`` on its own ``<origin>.lock`` for its life; the
kernel drops it when the process dies, however it dies. Another router on the node that
can take that lock (``orphans``) knows the owner is dead, rebuilds the dead router's
unacknowledged settlements from its segments (same batch ids, so one the ledger already
applied is ignored), sends them, then asks the ledger to refund everything else the dead
router still held (``QuotaLedger.close_origin``) and removes the journal.

Pure file I/O, no Ray: tested on a temporary folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serve_app.quota.usage import UsageMeter

logger = logging.getLogger("ray.serve")

LOCK_SUFFIX = ".lock"
SEGMENT_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Entry:
    """One metered call, as ``UsageMeter.record`` takes it, and the month of the
    admission it spent if it was answered (``None``: nothing to bill); ``held``: that
    admission was granted by the ledger (else the router admitted an unlimited tenant
    alone, and the answer is charged when settled)."""

    tenant: str
    model: str
    status: int
    epoch_s: float
    images: int = 0
    compute_s: float = 0.0
    spent_month: str | None = None
    held: bool = True

    def line(self) -> bytes:
        fields = [self.tenant, self.model, self.status, self.epoch_s, self.images,
                  self.compute_s, self.spent_month, self.held]  # fmt: skip
        return (json.dumps(fields, separators=(",", ":")) + "\n").encode()

    @classmethod
    def parse(cls, line: str) -> Entry:
        tenant, model, status, epoch_s, images, compute_s, month, held = json.loads(line)
        return cls(str(tenant), str(model), int(status), float(epoch_s), int(images),
                   float(compute_s), None if month is None else str(month),
                   held is True)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    """What one segment rebuilds: the metered usage and the images billed per month
    (held by the ledger, or to be charged)."""

    seq: int
    meter: UsageMeter
    spent: Counter[tuple[str, str]]
    charged: Counter[tuple[str, str]]


class Journal:
    """This replica's journal in ``folder`` (created), named after its ``origin``."""

    def __init__(self, folder: Path, origin: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.origin = folder, origin
        self._seq = 0
        self._fd = self._open(0)
        # Locked before it takes its name: a sweeper never sees it unlocked.
        lock = folder / f"{origin}{LOCK_SUFFIX}"
        unnamed = lock.with_name(lock.name + "-new")
        self._lock_fd = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        unnamed.rename(lock)

    def _path(self, seq: int) -> Path:
        return segment_path(self.folder, self.origin, seq)

    def _open(self, seq: int) -> int:
        return os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, entry: Entry) -> None:
        """Before the answer leaves: one ``write`` of one line (atomic for a file)."""
        os.write(self._fd, entry.line())

    def cut(self, seq: int) -> None:
        """What was written so far belongs to settlement ``seq``; go on in ``seq + 1``.
        (The router numbers settlements from 0 and cuts the journal with each.)"""
        os.close(self._fd)
        if seq != self._seq:
            self._path(self._seq).rename(self._path(seq))
        self._seq = seq + 1
        self._fd = self._open(self._seq)

    def acknowledged(self, seq: int) -> None:
        """The ledger applied settlement ``seq``: its segment is no longer needed."""
        with contextlib.suppress(FileNotFoundError):
            self._path(seq).unlink()

    def close(self) -> None:
        """Graceful end: everything was settled; remove the journal."""
        os.close(self._fd)
        for path in self.folder.glob(f"{self.origin}.*{SEGMENT_SUFFIX}"):
            path.unlink(missing_ok=True)
        (self.folder / f"{self.origin}{LOCK_SUFFIX}").unlink(missing_ok=True)
        os.close(self._lock_fd)


def segment_path(folder: Path, origin: str, seq: int) -> Path:
    return folder / f"{origin}.{seq:09d}{SEGMENT_SUFFIX}"


class Orphan:
    """A dead router's journal, locked by the router that found it."""

    def __init__(self, folder: Path, origin: str, lock_fd: int) -> None:
        self.folder, self.origin, self._lock_fd = folder, origin, lock_fd

    def segments(self) -> Iterator[Segment]:
        """Its segments, oldest first, each rebuilt into a meter and the images billed.
        A line cut short (the process died inside ``write``) was never answered: skipped."""
        for path in sorted(self.folder.glob(f"{self.origin}.*{SEGMENT_SUFFIX}")):
            seq = int(path.name[len(self.origin) + 1 : -len(SEGMENT_SUFFIX)])
            meter = UsageMeter()
            spent, charged = Counter[tuple[str, str]](), Counter[tuple[str, str]]()
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = Entry.parse(line)
                except (ValueError, TypeError):
                    logger.warning("router: skipped a torn line in %s's journal", self.origin)
                    continue
                meter.record(entry.tenant, entry.model, entry.status, entry.epoch_s,
                             entry.images, entry.compute_s)  # fmt: skip
                if entry.spent_month is not None:
                    billed = spent if entry.held else charged
                    billed[(entry.tenant, entry.spent_month)] += entry.images
            yield Segment(seq, meter, spent, charged)

    def remove(self) -> None:
        """Everything in it reached the ledger: delete it and let the lock go."""
        for path in self.folder.glob(f"{self.origin}.*{SEGMENT_SUFFIX}"):
            path.unlink(missing_ok=True)
        (self.folder / f"{self.origin}{LOCK_SUFFIX}").unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        os.close(self._lock_fd)


def orphans(folder: Path, own: str) -> Iterator[Orphan]:
    """Journals in ``folder`` whose router is dead (their lock could be taken)."""
    for lock in sorted(folder.glob(f"*{LOCK_SUFFIX}")):
        origin = lock.name[: -len(LOCK_SUFFIX)]
        if origin == own:
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:  # another router finished it meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its router is alive, or another is sweeping it
            os.close(fd)
            continue
        if not lock.exists():  # swept and removed between our glob and our lock
            os.close(fd)
            continue
        yield Orphan(folder, origin, fd)
