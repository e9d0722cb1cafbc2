"""A router's journal (``quota.journal``) and what the ledger does with it: a router
process really killed with SIGKILL, its journal found by another, its unsettled answers
billed once and everything else it held refunded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from serve_app.config import Quota
from serve_app.quota.admission import Admission
from serve_app.quota.journal import Entry, Journal, orphans
from serve_app.quota.ledger_store import LedgerStore
from serve_app.quota.settlement import Settler
from tests.conftest import ROOT
from tests.unit.fakes import FakeHandle

MONTH = "2026-11"
T0 = 1_763_452_800.0  # 2025-11-18T08:00Z; any fixed hour works


def _die_with_a_journal(folder, origin: str, answered: int, cut_after: int) -> None:
    """A process that journals ``answered`` answers (cut into settlement 0 after
    ``cut_after``), starts one more line, and is killed mid-write."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from serve_app.quota.journal import Entry, Journal
        journal = Journal(Path({str(folder)!r}), {origin!r})
        for i in range({answered}):
            if i == {cut_after}:
                journal.cut(0)
            journal.write(Entry("acme", "m@1", 200, {T0} + i, 1, 0.01, {MONTH!r}))
        journal.write(Entry("acme", "m@1", 503, {T0}))  # metered, not billed
        journal.write(Entry("globex", "m@1", 200, {T0}, 1, 0.01, {MONTH!r}, False))
        os.write(journal._fd, b'["acme","m@1",200,')  # killed inside a write
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr


def test_a_live_router_is_never_swept(tmp_path):
    live = Journal(tmp_path, "router-live")
    live.write(Entry("acme", "m@1", 200, T0, 1, 0.01, MONTH))
    assert list(orphans(tmp_path, own="router-other")) == []  # its lock is held
    live.close()
    assert list(tmp_path.iterdir()) == []  # a graceful end leaves nothing to sweep


def test_a_killed_router_leaves_exactly_its_unsettled_answers(tmp_path):
    _die_with_a_journal(tmp_path, "router-dead", answered=5, cut_after=2)
    [orphan] = orphans(tmp_path, own="router-me")
    segments = list(orphan.segments())
    assert [s.seq for s in segments] == [0, 1]
    assert [dict(s.spent) for s in segments] == [{("acme", MONTH): 2}, {("acme", MONTH): 3}]
    assert dict(segments[1].charged) == {("globex", MONTH): 1}  # admitted without a grant
    rows = segments[1].meter.take()
    assert sum(r.counts.requests for r in rows) == 5  # 4 answers + the 503; torn line skipped
    assert sum(r.counts.errors for r in rows) == 1
    assert list(orphans(tmp_path, own="router-me")) == []  # we hold it now
    orphan.remove()
    assert list(tmp_path.iterdir()) == []


def test_an_acknowledged_segment_is_deleted(tmp_path):
    journal = Journal(tmp_path, "router-a")
    journal.write(Entry("acme", "m@1", 200, T0, 1, 0.01, MONTH))
    journal.cut(0)
    journal.acknowledged(0)
    journal.write(Entry("acme", "m@1", 200, T0, 1, 0.01, MONTH))
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["router-a.000000001.jsonl"]
    journal.close()


def test_a_dead_routers_hold_is_billed_for_its_answers_and_refunded_for_the_rest(tmp_path):
    """The ledger granted 10 to a router that answered 5 (2 settled before it died) and
    was killed: after the sweep, 5 billed — not 10, and not 7 from a resent batch — and
    the unlimited tenant's one answer (never granted) charged."""
    store = LedgerStore(tmp_path / "ledger.db")
    folder = tmp_path / "journal"
    dead = "router-dead"
    store.add([("acme", MONTH, 10)], holds=[(dead, "acme", MONTH, 10)])
    # Its settlement 0 (2 answered) reached the ledger before it died.
    assert store.apply_settlement(f"{dead}-0", [], [], [], dead, [("acme", MONTH, 2)]) == []
    _die_with_a_journal(folder, dead, answered=5, cut_after=2)

    def settle(settlement):
        refunds = [(t, m, n) for t, _q, n, m in settlement.refunds]
        store.apply_settlement(settlement.batch_id, refunds, [], settlement.usage,
                               settlement.origin, settlement.spent,
                               settlement.charged)  # fmt: skip

    def close_origin(origin: str) -> int:
        return sum(n for _t, _m, n in store.close_origin(origin))

    ledger = FakeHandle({"settle": settle, "close_origin": close_origin})

    async def sweep() -> tuple[int, int]:
        admission = Admission(ledger, {"acme": Quota()}.get, journal_folder=folder)
        first, again = await admission.sweep(), await admission.sweep()
        await admission.close()
        return first, again

    assert asyncio.run(sweep()) == (1, 0)  # found once, gone afterwards
    assert store.load() == {"acme": {MONTH: 5}, "globex": {MONTH: 1}}
    assert store.holds() == []
    assert [p.name for p in folder.iterdir()] == []  # the sweeper's own journal closed too
    # Its first segment was resent under its batch id and ignored; the second applied.
    sent = [args[0].batch_id for name, _, args in ledger.calls if name == "settle"]
    assert sent == [f"{dead}-0", f"{dead}-1"]


def test_holds_bill_answers_refund_the_rest_and_are_forgotten_when_abandoned(tmp_path):
    store = LedgerStore(tmp_path / "ledger.db")
    settler = Settler("r")
    origin = settler.origin
    store.add([("acme", MONTH, 8)], holds=[(origin, "acme", MONTH, 8)])
    # 3 answered (billed), 2 refunded; a refund beyond the hold is not applied.
    applied = store.apply_settlement("b0", [("acme", MONTH, 2)], [], [], origin,
                                     [("acme", MONTH, 3)])  # fmt: skip
    assert applied == [("acme", MONTH, 2)]
    assert store.holds() == [(origin, "acme", MONTH, 3)]
    assert store.apply_settlement("b1", [("acme", MONTH, 9)], [], [], origin) == [
        ("acme", MONTH, 3)
    ]
    assert store.load() == {"acme": {MONTH: 3}} and store.holds() == []
    # A hold nobody settles for long enough is forgotten, and stays billed.
    store.add([("acme", MONTH, 4)], holds=[("router-lost", "acme", MONTH, 4)])
    store.prune(0.0, "2026-01-01T00", held_before=T0)  # recent: kept
    assert store.holds() == [("router-lost", "acme", MONTH, 4)]
    store.prune(0.0, "2026-01-01T00", held_before=4e9)
    assert store.holds() == [] and store.load() == {"acme": {MONTH: 7}}
    assert store.close_origin("router-lost") == []  # nothing left to refund
    # An unlimited tenant's answers were never granted: charged when settled, once.
    for _ in range(2):
        store.apply_settlement("b2", [], [], [], origin, charged=[("acme", MONTH, 5)])
    assert store.load() == {"acme": {MONTH: 12}} and store.holds() == []
