"""The ledger's warm standby: one file, one leader (``quota.leadership``), and the router's
``FailoverLedger`` moving to whichever replica can lead.

Real ``QuotaLedger`` objects on a real SQLite file and a real ``flock``; only the Serve
transport is faked (``FakeHandle``), and a replica's death is what Serve's handle shows of
it (a "replica gone" error, or calls held with no answer) plus what the kernel does (the
dead process's lock dropped). A lock held by a process really killed with SIGKILL is
tested on its own below; the whole path runs under Ray in
tests/integration/test_metering.py and tests/e2e/chaos.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from serve_app.config import Quota
from serve_app.quota.failover import FailoverLedger
from serve_app.quota.leadership import Leadership, NotLeader
from serve_app.quota.ledger import QuotaLedger
from tests.conftest import ROOT
from tests.unit.fakes import FakeHandle

METHODS = ("take_over", "grant", "usage")
MONTHLY = Quota(monthly_images=10)


class Gone(Exception):
    """What a call to a dead replica raises (ActorDiedError under Ray)."""


def _gone(exc: BaseException) -> bool:
    return isinstance(exc, Gone)


def _ledger(path: Path) -> Any:
    return QuotaLedger.func_or_class(str(path), f"file://{path.parent / 'usage'}")


def _handle(ledger: Any) -> FakeHandle:
    return FakeHandle({name: getattr(ledger, name) for name in METHODS})


def _serve(handle: FakeHandle, ledger: Any) -> None:
    """Serve started a replacement replica behind ``handle``."""
    handle.answers.update({name: getattr(ledger, name) for name in METHODS})


def _die(handle: FakeHandle, ledger: Any) -> None:
    """The replica's process died: the kernel drops its lock; calls to it fail."""
    ledger._leadership.release()

    def dead(*_args: Any) -> None:
        raise Gone

    handle.answers.update(dict.fromkeys(METHODS, dead))


def _pair(path: Path) -> tuple[Any, Any, FakeHandle, FakeHandle]:
    """A primary and a standby on one file, and the handles the router has to them."""
    primary, standby = _ledger(path), _ledger(path)
    return primary, standby, _handle(primary), _handle(standby)


def _names(handle: FakeHandle) -> list[str]:
    return [name for name, _model, _args in handle.calls]


async def _until(condition: Any) -> None:
    """Yield to the loop until ``condition()`` holds (callers bound it with wait_for)."""
    while not condition():
        await asyncio.sleep(0.001)


def test_the_standby_takes_over_a_dead_primary_with_the_months_usage(tmp_path):
    path = tmp_path / "ledger.db"
    primary, standby, hp, hs = _pair(path)
    ledger = FailoverLedger(hp, hs, _gone)

    async def scenario() -> None:
        first = await ledger.grant.remote("acme", MONTHLY, 4)
        assert first.granted == 4
        assert hs.calls == []  # a standby is not asked while the primary answers
        _die(hp, primary)
        second = await ledger.grant.remote("acme", MONTHLY, 4)
        assert second.granted == 4 and ledger.failovers == 1
        # It took over the file the primary had, and read the month from it.
        assert hs.calls[0] == ("take_over", None, (primary._store.epoch,))
        third = await ledger.grant.remote("acme", MONTHLY, 4)
        assert third.granted == 2  # 10 a month: 8 already granted, by either
        # Serve replaces the primary: it cannot lead while the standby lives.
        replacement = _ledger(path)
        _serve(hp, replacement)
        hp.calls.clear()
        refused = await ledger.grant.remote("acme", MONTHLY, 1)
        assert not refused.allowed and refused.code == "monthly_quota_exceeded"
        assert hp.calls == []
        with pytest.raises(NotLeader):
            await replacement.take_over()
        # The standby dies in turn: the replacement leads, with the same count.
        _die(hs, standby)
        usage = await ledger.usage.remote("acme")
        assert sum(usage["monthly_images"].values()) == 10
        assert ledger.failovers == 2 and replacement._leadership.held

    asyncio.run(scenario())


def test_a_call_held_with_no_replica_to_go_to_moves_to_the_standby(tmp_path):
    path = tmp_path / "ledger.db"
    primary, standby, hp, hs = _pair(path)
    ledger = FailoverLedger(hp, hs, _gone, failover_after_s=0.05)

    async def scenario() -> None:
        assert (await ledger.grant.remote("acme", MONTHLY, 3)).granted == 3
        _die(hp, primary)
        held: list[str] = []

        async def held_by_serve(*_args: Any) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                held.append("cancelled")

        hp.answers["grant"] = held_by_serve
        answer = await asyncio.wait_for(ledger.grant.remote("acme", MONTHLY, 3), 2)
        assert answer.granted == 3 and ledger.failovers == 1
        assert standby._leadership.held
        await asyncio.wait_for(_until(lambda: bool(held)), 2)
        assert held == ["cancelled"]  # the held call does not reach a replacement later

    asyncio.run(scenario())


def test_a_slow_leader_keeps_its_call_and_its_place(tmp_path):
    path = tmp_path / "ledger.db"
    primary, standby, hp, hs = _pair(path)
    ledger = FailoverLedger(hp, hs, _gone, failover_after_s=0.05)

    async def slow_grant(*args: Any) -> Any:
        # answers only once the router has offered the call to the standby
        await _until(lambda: "take_over" in _names(hs))
        return await primary.grant(*args)

    async def scenario() -> None:
        await ledger.grant.remote("acme", MONTHLY, 1)
        hp.answers["grant"] = slow_grant
        answer = await ledger.grant.remote("acme", MONTHLY, 2)
        assert answer.granted == 2
        assert _names(hs) == ["take_over"]  # offered, refused: the primary still leads
        assert ledger.failovers == 0 and not standby._leadership.held
        usage = await primary.usage("acme")
        assert sum(usage["monthly_images"].values()) == 3  # granted once, not twice

    asyncio.run(scenario())


def test_a_standby_that_sees_another_file_never_takes_over(tmp_path):
    path = tmp_path / "ledger.db"
    (tmp_path / "elsewhere").mkdir()
    primary, standby = _ledger(path), _ledger(tmp_path / "elsewhere" / "ledger.db")
    hp, hs = _handle(primary), _handle(standby)
    ledger = FailoverLedger(hp, hs, _gone)

    async def scenario() -> None:
        await ledger.grant.remote("acme", MONTHLY, 9)
        _die(hp, primary)
        with pytest.raises(Gone):  # the caller's ride-through waits for a replacement
            await ledger.grant.remote("acme", MONTHLY, 1)
        assert not standby._leadership.held
        _serve(hp, _ledger(path))
        answer = await ledger.grant.remote("acme", MONTHLY, 5)
        assert answer.granted == 1  # the month's count survived: 9 of 10 used

    asyncio.run(scenario())


def test_a_killed_leaders_lock_is_free_at_once(tmp_path):
    """A process really killed with SIGKILL while it leads: the lock is free the moment it
    is gone, and not before."""
    state = tmp_path / "ledger.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from serve_app.quota.leadership import Leadership
            assert Leadership(Path({str(state)!r})).acquire()
            print("leading", flush=True)
            time.sleep(600)
        """)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "leading\n"
        waiting = Leadership(state)
        assert not waiting.acquire() and not waiting.held
        holder.kill()
        holder.wait(10)
        assert waiting.acquire() and waiting.held
        assert not Leadership(state).acquire()  # and now it is this one's alone
        waiting.release()
        assert Leadership(state).acquire()
    finally:
        holder.kill()
        holder.wait(10)
