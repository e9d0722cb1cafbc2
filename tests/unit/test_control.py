"""Usage and policy calls (``http.control``): a per-tenant rate limit that never touches
another tenant, and a usage report fetched once per ``USAGE_CACHE_S`` however many ask."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.errors import QuotaExceeded, ServeAppError
from serve_app.http.control import ControlCalls


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_over_its_rate_gets_429_and_the_others_do_not():
    clock = Clock()
    control = ControlCalls(rate_per_s=2, burst=4, clock=clock)
    for _ in range(4):
        control.admit("loud")
    with pytest.raises(QuotaExceeded) as refused:
        control.admit("loud")
    assert refused.value.status == 429 and refused.value.retry_after_s == 1
    assert "per second" in refused.value.message
    for _ in range(4):
        control.admit("quiet")  # its own budget, untouched
    clock.now += 0.5  # one more call's worth has come back
    control.admit("loud")
    with pytest.raises(QuotaExceeded):
        control.admit("loud")


def test_a_usage_report_is_fetched_once_for_all_who_ask_and_kept_briefly():
    clock = Clock()
    control = ControlCalls(cache_s=1.0, clock=clock)
    fetches: list[int] = []

    async def fetch() -> dict[str, int]:
        fetches.append(1)
        await asyncio.sleep(0.01)
        return {"images_this_month": len(fetches)}

    async def scenario() -> None:
        reports = await asyncio.gather(*(control.usage("acme", fetch) for _ in range(50)))
        assert reports == [{"images_this_month": 1}] * 50 and len(fetches) == 1
        clock.now += 0.9
        assert (await control.usage("acme", fetch))["images_this_month"] == 1
        clock.now += 0.2  # past USAGE_CACHE_S: fetched again
        assert (await control.usage("acme", fetch))["images_this_month"] == 2
        assert (await control.usage("globex", fetch))["images_this_month"] == 3  # its own

    asyncio.run(scenario())


def test_a_failed_fetch_is_not_kept():
    control = ControlCalls(clock=Clock())
    answers = [ServeAppError("ledger down"), {"images_this_month": 7}]

    async def fetch() -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def scenario() -> None:
        with pytest.raises(ServeAppError):
            await control.usage("acme", fetch)
        assert (await control.usage("acme", fetch))["images_this_month"] == 7

    asyncio.run(scenario())
