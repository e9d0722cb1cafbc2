"""Which ledger replica may write the ledger's SQLite file: the one holding its lock.

The ledger runs as two deployments on the node that has its file: the primary and a warm
standby (``quota-ledger-standby``), both already started, so a dead primary's work moves
to a process that is up instead of waiting ~3 s for Serve to start a replacement. Only
one of them may act on the file at a time — monthly counts, leases and rate buckets live
in its memory — so acting needs an exclusive ``flock`` on ``<state file>.leader``, held
for the life of the process. The kernel drops it when the process dies, however it dies,
so the other replica can take it at once: no lease to time out, and no way for two to
hold it while both live.

A ``flock`` is only as wide as one node's kernel: the two replicas must see the same
file (``LedgerSpec.state_path`` on the node's disk or a volume mounted there), which is
also what makes the second one a standby rather than a second, empty ledger. The router
checks it: a standby is taken over only if its file's epoch is the one the leader had
(``QuotaLedger.take_over``).

Pure file I/O, no Ray: tested on a temporary folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LEADER_SUFFIX = ".leader"


class NotLeader(Exception):
    """This ledger replica does not hold the file: ask the other one (the router's
    ``FailoverLedger`` does), or wait while a replica being replaced still holds it."""


class Leadership:
    """The exclusive lock on one ledger file; ``acquire`` never blocks."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + LEADER_SUFFIX)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True if this process now holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Let the other replica take over (graceful shutdown); closing drops the lock."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
