"""Model-aware placement on the shared pool (``inference.pool_router``): pure ranking."""

from __future__ import annotations

from serve_app.constants import POOL_SPILL_QUEUE
from serve_app.inference.model_traffic import Traffic
from serve_app.inference.pool_router import Placements, Popularity, ReplicaLoad, rank


def _r(id_: str, holds: bool, queue: int = 0, models: int = 0) -> ReplicaLoad:
    return ReplicaLoad(id_, holds, queue, models)


def test_a_held_model_goes_to_its_holders_first_and_elsewhere_only_when_they_are_full():
    replicas = [_r("a", True, queue=5), _r("b", False, queue=0), _r("c", True, queue=1)]
    assert rank(replicas, hot=False) == [["a", "c"], ["b"]]


def test_a_model_nobody_holds_goes_to_the_least_busy_replica_fewest_models_on_a_tie():
    replicas = [_r("a", False, 3, 1), _r("b", False, 1, 9), _r("c", False, 1, 2)]
    assert rank(replicas, hot=False) == [["c"], ["c", "b", "a"]]
    assert rank([], hot=True) == []


def test_a_hot_model_gets_a_second_replica_once_its_holder_is_busier():
    busy = [_r("a", True, queue=POOL_SPILL_QUEUE), _r("b", False, queue=0)]
    assert rank(busy, hot=True) == [["b"], ["a"]]
    assert rank(busy, hot=False) == [["a"], ["b"]]  # a cold model is not copied around
    calm = [_r("a", True, queue=POOL_SPILL_QUEUE - 1), _r("b", False, queue=0)]
    assert rank(calm, hot=True) == [["a"], ["b"]]  # not busier by enough: stays
    both = [_r("a", True, queue=9), _r("b", True, queue=0)]
    assert rank(both, hot=True) == [["a", "b"], []]  # two holders: Serve takes the idler


def test_popularity_is_a_share_of_the_recent_window():
    seen = Popularity(share=0.25, window=8)
    for model in ["hot", "x", "hot", "y", "z", "w", "v", "u"]:
        seen.record(model)
    assert seen.hot("hot") and not seen.hot("x") and not seen.hot("never")
    for model in ["p", "q", "r", "s", "t", "o", "n"]:  # "hot" slides out of the window
        seen.record(model)
    assert not seen.hot("hot")
    assert not Popularity().hot("anything")  # nothing seen yet


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_replica_just_sent_a_model_counts_as_holding_it_for_a_while():
    clock = Clock()
    placed = Placements(ttl_s=3.0, clock=clock)
    placed.record("acme/m@1", "r1")
    clock.now += 2
    placed.record("acme/m@1", "r2")
    assert placed.recent("acme/m@1") == {"r1", "r2"}
    clock.now += 1.5
    assert placed.recent("acme/m@1") == {"r2"} and placed.recent("other") == set()


def test_a_replicas_traffic_names_its_hottest_and_its_recent_models():
    clock = Clock()
    traffic = Traffic(window=6, clock=clock)
    for model in ["a", "b", "a", "c"]:
        traffic.record(model)
        clock.now += 10
    assert traffic.hottest(1) == ["a"] and set(traffic.hottest(3)) == {"a", "b", "c"}
    # served in the last 25 s: "a" (at +20) and "c" (at +30), the most served first
    assert traffic.since(25) == ["a", "c"]
    for model in ["d", "d", "d", "d", "d", "d"]:  # the window slides past a, b, c
        traffic.record(model)
    assert traffic.hottest(3) == ["d"]
    recent = traffic.since(1000)  # still served within the time, if no longer the most
    assert recent[0] == "d" and set(recent) == {"a", "b", "c", "d"}
    assert traffic.since(0.5) == ["d"]
