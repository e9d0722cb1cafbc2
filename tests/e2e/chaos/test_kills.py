"""The chaos tier: `make run` (HAProxy in front, two routers, two detector replicas), two
clients in a closed loop, one process of each role killed with SIGKILL in turn. The
longer runs and the table are `scripts/chaos.py` (docs/reliability.md).

* detector, ledger (its warm standby takes over), router, controller: no request fails,
  the gap without an answer stays under the ride-through budget, the role's processes
  come back;
* ingress (the HAProxy Ray runs, or its understudy on the same port): only the requests
  it held fail, as broken connections (at most one per client), the other serves every
  new connection meanwhile, and the killed one is back;
* billing: every answered image is billed and nothing else — the ledger holds what it
  granted a router until the router (or, for a killed one, its journal) says what was
  answered — but for an answer the killed router journaled in the instant before its
  bytes left, and HAProxy's death the images answered by a router that it could not
  pass on.
"""

from __future__ import annotations

import sys

import pytest
import yaml

from tests.conftest import ROOT, free_port, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import chaos
from local_run import local_run

CLIENTS = 2
SECONDS = 10.0
KILL_AFTER_ANSWERS = 20
GAP_LIMIT_S = 5.0  # under the ride-through budgets (RIDE_THROUGH_S, LEDGER_RIDE_THROUGH_S)
MONTHLY_IMAGES = 1_000_000


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    work = tmp_path_factory.mktemp("chaos")
    port = free_port()
    config = work / "chaos.yaml"
    # A monthly quota: every request needs a ledger grant, so the ledger's kill is felt
    # (a tenant without limits is admitted without the ledger for a while).
    raw = chaos.platform_config(routers=2, port=port, monthly_images=MONTHLY_IMAGES)
    config.write_text(yaml.safe_dump(raw))
    base = f"http://127.0.0.1:{port}"
    with local_run(config, base, work / "run.log") as run:
        yield {"base": base, "url": f"{base}/v1/detect", "answered": [0], "run": run}
    assert run.stopped_in_time and not run.haproxy_survivors


def _kill_under_load(platform, role: str) -> tuple[list[tuple[float, str]], int]:
    before = chaos.pids_of(role)
    assert before, f"no {role} process is running"

    def kill(answers) -> None:  # mid-load: once the clients have had some answers
        wait_for(lambda: answers() >= KILL_AFTER_ANSWERS, SECONDS / 2, "answers before the kill")
        chaos.os.kill(before[0], chaos.signal.SIGKILL)

    results, answered = chaos.load(platform["url"], CLIENTS, SECONDS, kill)
    platform["answered"][0] += answered
    # The role is whole again: as many processes as before, none of them the killed one.
    wait_for(lambda: len(set(chaos.pids_of(role)) - {before[0]}) >= len(before), 60,
             f"the {role} to be replaced")  # fmt: skip
    return results, answered


@pytest.mark.parametrize("role", ["detector", "ledger", "controller", "router"])
def test_a_killed_process_fails_no_request(platform, role):
    results, answered = _kill_under_load(platform, role)
    failed = [s for _, s in results if s != "200"]
    assert not failed, f"{len(failed)} failed after killing the {role}: {set(failed)}"
    assert answered > 10
    assert chaos.longest_gap(results, SECONDS) < GAP_LIMIT_S


def test_every_answered_image_is_billed_through_the_kills(platform):
    """After the detector, ledger, controller and router kills: billed = answered, but
    for an answer journaled by the killed router in the instant before its bytes left
    (then sent again by HAProxy and answered by the other): at most one per client."""
    _billed_within(platform, CLIENTS)


@pytest.mark.parametrize("role", ["ingress", "understudy"])
def test_a_killed_haproxy_fails_only_the_requests_it_held(platform, role):
    # One of each: a reload's old HAProxy may still be finishing its last requests.
    wait_for(lambda: len(chaos.pids_of(role)) == 1, 30, f"a single {role} HAProxy")
    results, _ = _kill_under_load(platform, role)
    failed = [(round(t, 3), s) for t, s in results if s != "200"]  # (seconds in, status)
    assert len(failed) <= CLIENTS and {s for _, s in failed} <= {"ConnectionError"}, failed
    assert chaos.longest_gap(results, SECONDS) < GAP_LIMIT_S


def test_an_ingress_death_bills_at_most_the_answers_it_had_in_flight(platform):
    """A killed HAProxy's requests in flight were answered by a router (billed) and lost
    with it: at most one per client more per kill, over the whole run."""
    _billed_within(platform, 3 * CLIENTS)


def _billed_within(platform, extra: int) -> None:
    answered = platform["answered"][0]
    billed: list[int] = []

    def settled() -> bool:
        billed.append(chaos.usage(platform["base"]))
        return answered <= billed[-1] <= answered + extra

    try:
        wait_for(settled, 30, f"usage to settle at {answered} answered images (+{extra} at most)")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; billed {billed[-1] if billed else 'unknown'}") from None
    platform["extra_billed"] = billed[-1] - answered
