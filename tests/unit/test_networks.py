"""Identical weights are one network in a replica, whoever's model ids run them
(``inference.networks``)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve_app.inference.networks import NetworkShelf
from serve_app.models.engine import ONNX_RUNTIME, Engine

ENGINE = Engine(ONNX_RUNTIME, "test")


class FakeRunner:
    fixed_side = None
    largest_batch = None

    def __init__(self, size: int) -> None:
        self.size = size

    def footprint(self) -> int:
        return self.size

    def predict(self, images, imgsz, thresholds, alone=False):
        return []


def test_one_build_per_key_shared_and_dropped_with_its_last_user():
    shelf = NetworkShelf()
    builds: list[str] = []

    def build(key: str, size: int):
        def run():
            builds.append(key)
            return FakeRunner(size), ENGINE

        return run

    a, built_a = shelf.acquire("demo", "acme/shapes@1", build("demo", 100))
    b, built_b = shelf.acquire("demo", "globex/pcb@3", build("demo", 100))
    c, _ = shelf.acquire("other", "initech/m@1", build("other", 40))
    assert (built_a, built_b) == (True, False) and a is b and builds == ["demo", "other"]
    assert shelf.users() == {"demo": ["acme/shapes@1", "globex/pcb@3"], "other": ["initech/m@1"]}
    assert shelf.total_bytes() == 140  # the shared network counted once
    assert shelf.release("demo", "acme/shapes@1") is False  # globex still runs it
    assert a.runner is not None and shelf.held("demo")
    assert shelf.release("demo", "globex/pcb@3") is True
    assert a.runner is None and not shelf.held("demo") and shelf.total_bytes() == 40
    assert shelf.release("demo", "globex/pcb@3") is False  # idempotent
    shelf.acquire("demo", "acme/shapes@1", build("demo", 100))  # built again when wanted
    assert builds == ["demo", "other", "demo"] and c.runner is not None


def test_concurrent_loads_of_one_key_build_once_and_a_build_blocks_no_other_key():
    shelf = NetworkShelf()
    shelf.acquire("hot", "acme/hot@1", lambda: (FakeRunner(1), ENGINE))
    release = threading.Event()
    started = threading.Event()
    builds = []

    def slow():
        builds.append("slow")
        started.set()
        assert release.wait(10)
        return FakeRunner(5), ENGINE

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(shelf.acquire, "slow", "acme/slow@1", slow)
        assert started.wait(10)
        second = pool.submit(shelf.acquire, "slow", "globex/slow@1", slow)
        # while "slow" builds, the held network is there at once for another id
        network, built = pool.submit(shelf.acquire, "hot", "globex/hot@1", slow).result(5)
        assert not built and network.users == {"acme/hot@1", "globex/hot@1"}
        assert not second.done()
        release.set()
        (one, built_one), (two, built_two) = first.result(10), second.result(10)
    assert one is two and (built_one, built_two) == (True, False) and builds == ["slow"]


def test_a_failed_build_holds_nothing_and_can_be_tried_again():
    shelf = NetworkShelf()

    def broken():
        raise ValueError("bad graph")

    with pytest.raises(ValueError, match="bad graph"):
        shelf.acquire("k", "acme/m@1", broken)
    assert not shelf.held("k") and shelf.users() == {}
    network, built = shelf.acquire("k", "acme/m@1", lambda: (FakeRunner(3), ENGINE))
    assert built and network.footprint == 3
