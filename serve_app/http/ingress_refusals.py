"""Refusals answered by the ingress: once the ledger has refused a credential until T,
the node's HAProxy refuses that credential's detect calls itself until T.

A refusal the router repeats (``quota/refusals.py``) is cheap for the router's own code,
but the request still crosses HAProxy, Serve's direct ingress and uvicorn into the router:
about 1 ms of CPU on the 2-core reference machine. So on a refusal the router publishes
the window to HAProxy's runtime API, on this node's admin sockets (Ray's HAProxy and its
understudy): the sha256 of the request's ``Authorization`` header mapped to
``"T RETRY_AT CODE LIMIT RESET_AT TALLY_KEY"`` (epoch milliseconds) in the map that
``scripts/haproxy_loopback.sh`` adds to Ray's config. Until T, HAProxy holds each such
POST to ``/v1/detect`` one second (``timeout tarpit``: a client that ignores
``Retry-After`` is slowed, as the router would) and answers the router's 429 itself,
body unread, counting it under ``TALLY_KEY`` (``tenant:code:credential tag:router``) in a
stick table. The router that published reads its own keys' counts every
``INGRESS_TALLY_PERIOD_S``: the refusals reach the request metrics, the tenant's usage and
the audit log (one line per credential and reason per period, with its ``count``). A
router that dies leaves its last second's count uncounted.

Nothing here is needed for correctness: a publish that fails or arrives late only means
the router refuses by itself meanwhile, and a window HAProxy keeps is never longer than
the ledger's (a refusal can only come sooner to an end: the map is cleared whenever the
router's quotas may have changed). Another node's HAProxy does not know of the window:
its requests reach a router, which refuses locally and publishes there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray import serve

from serve_app.auth.tenants import Principal
from serve_app.constants import (
    INGRESS_EXPIRED_KEEP_S,
    INGRESS_REFUSAL_MAP,
    INGRESS_REFUSAL_TABLE,
    INGRESS_SOCKET_TIMEOUT_S,
    INGRESS_TALLY_PERIOD_S,
)
from serve_app.http.calls import CallLog
from serve_app.quota.admission import Admission
from serve_app.quota.refusals import Refusals, Window
from serve_app.quota.usage import NO_MODEL
from serve_app.ray_compat import haproxy_files

logger = logging.getLogger("ray.serve")

_TALLY_LINE = re.compile(r"\bkey=(\S+) .*\bhttp_req_cnt=(\d+)")
TAG_CHARS = 16  # of the credential's digest, in the tally key


@dataclass(frozen=True)
class IngressWindow:
    """A refusal window as HAProxy keeps it (epoch seconds)."""

    tenant: str
    credential: str  # key id or ``jwt:subject``: for the audit log only
    code: str
    until_s: float
    retry_at_s: float
    reset_at_s: float
    limit: int

    @classmethod
    def of(cls, window: Window, tenant: str, credential: str, clock_s: float) -> IngressWindow:
        """``window`` (kept on a clock that reads ``clock_s`` now) on the epoch."""
        shift = time.time() - clock_s
        return cls(
            tenant,
            credential,
            window.code,
            window.until + shift,
            window.retry_at + shift,
            window.reset_at + shift,
            window.limit or 0,
        )


@dataclass(frozen=True)
class Tally:
    """Refusals HAProxy answered for one credential and reason since the last reading."""

    tenant: str
    code: str
    credential: str
    count: int


def credential_digest(authorization: str) -> str:
    """What HAProxy computes: ``req.fhdr(authorization),sha2(256),hex,lower``."""
    return hashlib.sha256(authorization.encode("latin-1")).hexdigest()


def map_value(window: IngressWindow, digest: str, owner: str) -> str:
    """The map entry's value, in the order of the wrapper's ``field()`` calls; refusals
    are tallied under ``tenant:code:credential tag:owner`` (the router that published)."""
    tally_key = f"{window.tenant}:{window.code}:{digest[:TAG_CHARS]}:{owner}"
    # T rounded down: HAProxy never refuses past the ledger's window
    fields = (int(window.until_s * 1e3), round(window.retry_at_s * 1e3), window.code,
              window.limit, round(window.reset_at_s * 1e3), tally_key)  # fmt: skip
    return " ".join(str(f) for f in fields)


def parse_tally(text: str) -> dict[str, int]:
    """``show table`` output: the count so far by tally key."""
    return {match[1]: int(match[2]) for match in _TALLY_LINE.finditer(text)}


def _cli_word(text: str) -> str:
    """An argument for HAProxy's CLI: spaces escaped (no value here holds ``;``)."""
    return text.replace(" ", "\\ ")


class IngressRefusals:
    """This router's side of the ingress's refusals: publish windows, read the tally."""

    def __init__(
        self,
        folder: Path | None,
        admin_socket: Path | None,
        on_tally: Callable[[list[Tally]], None],
        owner: str = "router",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sockets = [] if folder is None or admin_socket is None else [
            admin_socket, folder / "understudy" / "admin.sock"]  # fmt: skip
        self._map = None if folder is None else str(folder / INGRESS_REFUSAL_MAP)
        self._on_tally = on_tally
        self._owner = re.sub(r"[^a-z0-9]", "", owner.lower())[:16] or "router"
        self._seen: dict[tuple[Path, str], int] = {}  # (socket, tally key) -> counted
        self._clock = clock
        self._published: dict[str, float] = {}  # digest -> until (epoch s)
        self._credentials: dict[str, str] = {}  # tally tag -> credential (audit)
        self._commands: list[str] = []  # to send at the next wake-up
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # socket exchanges that failed (HAProxy down or restarting)
        self.readings = 0  # tally readings done (for tests)
        self.sent = 0  # command lines sent to every socket (for tests)

    @classmethod
    def for_this_node(cls, calls: CallLog, admission: Admission) -> IngressRefusals:
        """Publishing to this node's HAProxy (none unless it is Serve's ingress), the
        tally accounted in ``calls`` and ``admission``."""
        folder, socket = haproxy_files() or (None, None)
        owner = serve.get_replica_context().replica_id.unique_id if folder else "router"
        return cls(folder, socket, functools.partial(counted, calls, admission), owner)

    @property
    def enabled(self) -> bool:
        return bool(self._sockets)

    def publish(self, authorization: str, window: IngressWindow) -> None:
        """Tell HAProxy: refuse this ``Authorization`` header until ``window.until_s``."""
        if not self.enabled or window.until_s <= self._clock():
            return
        digest = credential_digest(authorization)
        if self._published.get(digest) == window.until_s:
            return  # told already
        self._published[digest] = window.until_s
        self._credentials[digest[:TAG_CHARS]] = window.credential
        key, value = digest, _cli_word(map_value(window, digest, self._owner))
        self._commands.append(f"del map {self._map} {key};add map {self._map} {key} {value}")
        self._start()

    def refused(self, authorization: str, principal: Principal, refusals: Refusals) -> None:
        """A detect call with this header was refused: publish the window, if one is kept."""
        tenant = principal.tenant.id
        window = refusals.window(tenant)
        if window is not None:
            self.publish(
                authorization,
                IngressWindow.of(window, tenant, principal.credential, refusals.now()),
            )

    def forget(self) -> None:
        """Quotas may have changed: HAProxy refuses nothing more until told again."""
        if not self.enabled or not self._published:
            return
        self._published.clear()
        self._commands = [f"clear map {self._map}"]
        self._start()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _start(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Send what was published at once; read the tally every period while anything
        may be counted; end once nothing is published and the last reading was empty."""
        next_tally = self._clock() + INGRESS_TALLY_PERIOD_S
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_tally - self._clock())):
                    await self._wake.wait()
            self._wake.clear()
            commands, self._commands = self._commands, []
            if commands:
                await self._send(";".join(commands))
                self.sent += 1
            if self._clock() < next_tally:
                continue
            next_tally = self._clock() + INGRESS_TALLY_PERIOD_S
            counted = await self._read_tally()
            self._drop_expired()
            if not counted and not self._published and not self._commands:
                return

    async def _read_tally(self) -> bool:
        """Count what HAProxy refused under this router's tally keys since the last
        reading (the table's counts only grow, until an idle entry expires and starts
        again from zero); another router counts its own."""
        new: dict[str, int] = {}  # by tally key, both HAProxies together
        answers = await self._send(f"show table {INGRESS_REFUSAL_TABLE}")
        self.readings += 1
        for path, text in answers.items():
            for key, total in parse_tally(text).items():
                if not key.endswith(f":{self._owner}"):
                    continue
                seen = self._seen.get((path, key), 0)
                self._seen[(path, key)] = total
                new[key] = new.get(key, 0) + (total - seen if total >= seen else total)
        tallies = []
        for key, n in new.items():
            tenant, code, tag, _ = key.split(":")
            if n:
                tallies.append(Tally(tenant, code, self._credentials.get(tag, "-"), n))
        if tallies:
            self._on_tally(tallies)
        return bool(tallies)

    def _drop_expired(self) -> None:
        cutoff = self._clock() - INGRESS_EXPIRED_KEEP_S
        gone = [digest for digest, until in self._published.items() if until < cutoff]
        for digest in gone:
            del self._published[digest]
            self._commands.append(f"del map {self._map} {digest}")
        if gone:
            self._wake.set()

    async def _send(self, line: str) -> dict[Path, str]:
        """One command line to every admin socket on the node; what each answered."""
        answers = {}
        for path in self._sockets:
            try:
                async with asyncio.timeout(INGRESS_SOCKET_TIMEOUT_S):
                    reader, writer = await asyncio.open_unix_connection(str(path))
                    writer.write(line.encode() + b"\n")
                    answers[path] = (await reader.read()).decode(errors="replace")
                    writer.close()
            except (OSError, TimeoutError) as exc:
                if path == self._sockets[0]:  # the understudy is often not there
                    self.failures += 1
                    if self.failures == 1 or self.failures % 100 == 0:
                        logger.warning("router: HAProxy admin socket: %s", type(exc).__name__)
        return answers


def counted(calls: CallLog, admission: Admission, tallies: list[Tally]) -> None:
    """The ingress's refusals, accounted as the router's own: request metrics, audit,
    and the tenant's usage (each a refused call, as ``GET /v1/usage`` reports them)."""
    for tally in tallies:
        calls.refused_at_ingress(tally.tenant, tally.credential, tally.code, tally.count)
        admission.settler.key_used(tally.credential, tally.tenant, time.time())
        for _ in range(tally.count):
            admission.record(tally.tenant, NO_MODEL, 429)
