"""Usage metering, settlements and the ledger's SQLite file (no Ray)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from serve_app.config import Quota
from serve_app.quota.allowances import Refund
from serve_app.quota.ledger_store import LedgerStore
from serve_app.quota.settlement import Settler
from serve_app.quota.usage import UsageCounts, UsageMeter, UsageRow, aggregate, hour_key

T0 = 1_795_000_000.0  # 2026-11-18T07:06:40Z


def test_the_meter_counts_outcomes_per_tenant_hour_and_model():
    meter = UsageMeter()
    meter.record("acme", "pcb@2", 200, T0, images=1, compute_s=0.02)
    meter.record("acme", "pcb@2", 200, T0 + 1, images=1, compute_s=0.03)
    meter.record("acme", "pcb@2", 429, T0 + 2)
    meter.record("acme", "-", 415, T0 + 3)
    meter.record("acme", "pcb@2", 200, T0 + 3600, images=1, compute_s=0.01)  # next hour
    rows = {(r.hour, r.model): r.counts for r in meter.take()}
    assert rows[(hour_key(T0), "pcb@2")] == UsageCounts(3, 2, pytest.approx(0.05), 1, 0)
    assert rows[(hour_key(T0), "-")] == UsageCounts(1, 0, 0.0, 0, 1)
    assert rows[(hour_key(T0 + 3600), "pcb@2")].images == 1
    assert meter.take() == ()  # taken means gone


def test_json_lines_escape_crafted_names_and_round_trip():
    row = UsageRow('ac"me', "2026-11-18T07", 'x\n{"tenant": "evil"}@1', UsageCounts(1, 1, 0.5))
    line = row.to_json()
    assert "\n" not in line and json.loads(line)["tenant"] == 'ac"me'
    assert UsageRow.from_json(line) == row


def test_aggregate_filters_by_tenant_and_month():
    rows = [
        UsageRow("acme", "2026-11-18T07", "m@1", UsageCounts(2, 2, 0.1)),
        UsageRow("acme", "2026-11-18T07", "m@1", UsageCounts(1, 1, 0.1)),
        UsageRow("acme", "2026-10-31T23", "m@1", UsageCounts(5, 5, 0.1)),
        UsageRow("globex", "2026-11-18T07", "m@1", UsageCounts(9, 9, 0.1)),
    ]
    table = aggregate(rows, tenant="acme", month="2026-11")
    assert list(table) == [("acme", "2026-11-18T07", "m@1")]
    assert table[("acme", "2026-11-18T07", "m@1")].requests == 3


class FlakyLedger:
    """Applies settlements through a real LedgerStore; can fail before or after applying."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.fail_before = 0
        self.fail_after = 0

    async def __call__(self, settlement) -> None:
        if self.fail_before:
            self.fail_before -= 1
            raise TimeoutError("ledger down")
        self.store.apply_settlement(
            settlement.batch_id,
            [(t, m, u) for t, _q, u, m in settlement.refunds],
            list(settlement.key_uses),
            settlement.usage,
            settlement.origin,
            settlement.spent,
        )
        if self.fail_after:  # applied, but the answer is lost
            self.fail_after -= 1
            raise TimeoutError("answer lost")


def test_settlements_are_delivered_once_through_failures(tmp_path):
    store = LedgerStore(tmp_path / "ledger.db")
    ledger = FlakyLedger(store)
    settler = Settler("test")
    quotas = {"acme": Quota()}
    for i in range(10):
        settler.meter.record("acme", "m@1", 200, T0 + i, images=1, compute_s=0.01)
        ledger.fail_before = 1 if i == 3 else 0
        ledger.fail_after = 1 if i == 6 else 0
        asyncio.run(settler.settle(quotas.get, ledger))
    assert asyncio.run(settler.deliver(ledger)) == 0
    assert store.hourly("acme", "2026-11-18T00")[hour_key(T0)].images == 10


def test_refunds_and_key_uses_travel_in_settlements(tmp_path):
    store = LedgerStore(tmp_path / "ledger.db")
    settler = Settler("test")
    store.add([("acme", "2026-11", 10)], holds=[(settler.origin, "acme", "2026-11", 10)])
    settler.refund([Refund("acme", 4, "2026-11"), Refund("gone", 1, "2026-11")])
    settler.key_used("key_abc", "acme", T0)
    settler.key_used("jwt:job", "acme", T0)  # not a key: no last-used record
    asyncio.run(settler.settle({"acme": Quota()}.get, FlakyLedger(store)))
    assert store.load() == {"acme": {"2026-11": 6}}
    assert store.key_last_used("acme") == {"key_abc": T0}


def test_export_watermark_moves_only_forward(tmp_path):
    store = LedgerStore(tmp_path / "ledger.db")
    row = UsageRow("acme", "2026-11-18T07", "m@1", UsageCounts(1, 1, 0.1))
    assert store.apply_settlement("b1", [], [], [row, row]) is not None
    assert store.apply_settlement("b1", [], [], [row, row]) is None  # a retry: ignored
    first, last, rows = store.unexported(10)
    assert (first, last, len(rows)) == (1, 2, 2)
    assert store.unexported(10)[2] == rows  # not marked yet: the same rows again
    store.mark_exported(last)
    assert store.unexported(10)[2] == []
    epoch = store.epoch
    assert LedgerStore(tmp_path / "ledger.db").epoch == epoch  # stable across restarts
    assert LedgerStore(tmp_path / "other.db").epoch != epoch


def test_the_growing_tables_are_pruned_and_retries_stay_exactly_once(tmp_path):
    """Settlement ids older than the retention and exported rows older than the report
    window go; a retry within the retention is still ignored; unexported rows stay."""
    store = LedgerStore(tmp_path / "ledger.db")
    old, recent = "2026-11-16T07", "2026-11-18T07"
    row = lambda hour: UsageRow("acme", hour, "m@1", UsageCounts(1, 1, 0.1))  # noqa: E731
    store.add([("acme", "2026-11", 100)])
    for i in range(50):  # each refunds one image
        assert store.apply_settlement(f"b{i}", [("acme", "2026-11", 1)], [], [row(old)])
    store.mark_exported(store.unexported(1000)[1])  # all 50 old rows exported
    assert store.apply_settlement("late", [], [], [row(old), row(recent)]) is not None
    assert store.sizes() == {"settlements": 51, "usage_log": 52}

    # retention not over for any id; exported rows before the window go
    assert store.prune(settled_before=0.0, hours_before="2026-11-17T00") == (0, 50)
    assert store.sizes() == {"settlements": 51, "usage_log": 2}  # the unexported two stay
    assert store.apply_settlement("b7", [("acme", "2026-11", 1)], [], [row(recent)]) is None
    assert store.load()["acme"]["2026-11"] == 50  # the retry counted nothing

    assert store.prune(settled_before=time.time() + 1, hours_before="2026-11-17T00") == (51, 0)
    assert store.sizes() == {"settlements": 0, "usage_log": 2}
    assert store.hourly("acme", recent)[recent].images == 1  # the report window is intact


def test_one_connection_serves_the_loop_and_the_export_thread_at_once(tmp_path):
    """Transactions from two threads on the shared connection never interleave."""
    store = LedgerStore(tmp_path / "ledger.db")
    row = UsageRow("acme", "2026-11-18T07", "m@1", UsageCounts(1, 1, 0.1))
    store.add([("acme", "2026-11", 300)])
    errors: list[BaseException] = []

    def settle() -> None:
        try:
            for i in range(300):
                store.apply_settlement(f"s{i}", [("acme", "2026-11", 1)], [], [row, row])
        except BaseException as exc:
            errors.append(exc)

    def export() -> None:
        try:
            for _ in range(300):
                _, last, rows = store.unexported(50)
                if rows:
                    store.mark_exported(last)
                store.prune(0.0, "2026-11-01T00")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=settle), threading.Thread(target=export)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.load()["acme"]["2026-11"] == 0  # 300 granted, 300 refunded one by one
    assert store.sizes() == {"settlements": 300, "usage_log": 600}


def test_ledger_exports_json_lines_that_tenantctl_usage_adds_up(tmp_path, capsys):
    from serve_app.quota.ledger import QuotaLedger
    from serve_app.quota.usage import Settlement
    from tenant_registry.cli import main

    usage_uri = f"file://{tmp_path / 'usage'}"
    ledger = QuotaLedger.func_or_class(str(tmp_path / "ledger.db"), usage_uri)
    row = UsageRow("acme", hour_key(T0), "pcb@2", UsageCounts(3, 2, 0.05, 1, 0))
    other = UsageRow("globex", hour_key(T0), "m@1", UsageCounts(1, 1, 0.01, 0, 0))

    async def settle_twice() -> None:
        for _ in range(2):  # the second is a retry of the same batch
            await ledger.settle(Settlement(batch_id="r-1", usage=(row, other)))
        await ledger.settle(Settlement(batch_id="r-2", usage=(row,)))

    asyncio.run(settle_twice())
    assert ledger.export_usage() == 3
    assert ledger.export_usage() == 0  # nothing new: no new file
    [exported] = list((tmp_path / "usage" / "2026-11").iterdir())
    assert len(exported.read_text().splitlines()) == 3

    db = str(tmp_path / "registry.db")
    assert main(["--db", db, "init"]) == 0
    assert main(["--db", db, "platform", "set", "--usage-uri", usage_uri]) == 0
    capsys.readouterr()
    assert main(["--db", db, "usage", "--month", "2026-11", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    acme = next(r for r in data if r["tenant"] == "acme")
    assert (acme["requests"], acme["images"], acme["rejected"]) == (6, 4, 2)
    assert main(["--db", db, "usage", "--month", "2026-11", "--csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0] == "tenant,hour,model,requests,images,compute_s,rejected,errors"
    assert len(csv_lines) == 3
    assert main(["--db", db, "usage", "--month", "2026-13"]) == 2


def test_ledger_leases_admissions_and_durable_monthly_counts(tmp_path):
    """The ledger class itself (no Ray): admit/release for capped tenants, grants, and a
    monthly count that is on disk the moment a grant is answered."""
    from serve_app.quota.ledger import QuotaLedger

    path = str(tmp_path / "ledger.db")
    ledger = QuotaLedger.func_or_class(path, f"file://{tmp_path / 'usage'}")
    capped = Quota(max_concurrent=1)

    async def scenario():
        first = await ledger.admit("acme", capped, 1)
        refused = await ledger.admit("acme", capped, 1)
        await ledger.release("acme", first.lease_id)
        again = await ledger.admit("acme", capped, 1)
        granted = await ledger.grant("globex", Quota(monthly_images=10), 4)
        return first, refused, again, granted

    first, refused, again, granted = asyncio.run(scenario())
    assert first.allowed and not refused.allowed and again.allowed
    assert granted.granted == 4
    restarted = QuotaLedger.func_or_class(path, f"file://{tmp_path / 'usage'}")  # no shutdown
    month = granted.month
    assert restarted._store.load() == {"acme": {month: 2}, "globex": {month: 4}}
