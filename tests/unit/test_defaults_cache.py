"""A router's copy of tenants' own defaults: one wait per tenant, then never on the
hot path; refreshed in the background; the last copy kept while the ledger is away."""

from __future__ import annotations

import asyncio

from serve_app.inference.defaults_cache import TenantDefaultsCache
from serve_app.wire import TenantDefaults
from tests.unit.fakes import loop_turn


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ledger:
    """Counts fetches; ``gate`` holds a fetch until the test opens it."""

    def __init__(self) -> None:
        self.saved: dict[str, TenantDefaults | None] = {}
        self.fetches = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = False

    async def fetch(self, tenant: str) -> TenantDefaults | None:
        self.fetches += 1
        await self.gate.wait()
        if self.down:
            raise ConnectionError("ledger gone")
        return self.saved.get(tenant)


def test_first_request_waits_then_copies_are_served_until_they_expire():
    async def run():
        ledger, clock = Ledger(), Clock()
        cache = TenantDefaultsCache(ledger.fetch, ttl_s=2.0, clock=clock)
        ledger.saved["acme"] = TenantDefaults(conf=0.4)
        assert await cache.get("acme") == TenantDefaults(conf=0.4)
        ledger.saved["acme"] = TenantDefaults(conf=0.6)
        assert await cache.get("acme") == TenantDefaults(conf=0.4)  # fresh copy
        assert ledger.fetches == 1
        clock.now += 2.5  # expired: the old copy is answered, one refresh runs
        ledger.gate.clear()
        answers = await asyncio.gather(*(cache.get("acme") for _ in range(5)))
        assert answers == [TenantDefaults(conf=0.4)] * 5
        ledger.gate.set()
        while ledger.fetches < 2 or await cache.get("acme") != TenantDefaults(conf=0.6):
            await loop_turn()
        return ledger.fetches

    assert asyncio.run(run()) == 2  # five callers in the stale window shared one fetch


def test_concurrent_first_requests_share_one_fetch():
    async def run():
        ledger = Ledger()
        ledger.gate.clear()
        cache = TenantDefaultsCache(ledger.fetch)
        waiting = [asyncio.ensure_future(cache.get("acme")) for _ in range(4)]
        await loop_turn()
        ledger.gate.set()
        return await asyncio.gather(*waiting), ledger.fetches

    answers, fetches = asyncio.run(run())
    assert answers == [None] * 4 and fetches == 1


def test_the_last_copy_survives_a_ledger_outage_and_a_put_is_seen_at_once():
    async def run():
        ledger, clock = Ledger(), Clock()
        cache = TenantDefaultsCache(ledger.fetch, ttl_s=2.0, clock=clock)
        ledger.saved["acme"] = TenantDefaults(max_det=7)
        await cache.get("acme")
        ledger.down = True
        clock.now += 3
        await cache.get("acme")  # starts a refresh that fails
        while ledger.fetches < 2:
            await loop_turn()
        await loop_turn()
        kept = await cache.get("acme")
        unknown = await cache.get("globex")  # never fetched, ledger down: no defaults
        cache.put("acme", TenantDefaults(max_det=3))
        return kept, unknown, await cache.get("acme")

    kept, unknown, after_put = asyncio.run(run())
    assert kept == TenantDefaults(max_det=7)
    assert unknown is None
    assert after_put == TenantDefaults(max_det=3)
