"""scripts/bench_rounds.py: the steady state of a closed-loop block, the pooling of blocks
into a cell, and the pause that keeps one system off the CPUs while another runs."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench_rounds


def test_one_worker_counts_every_call_from_the_start():
    assert bench_rounds.steady_window([1.0, 2.0, 3.0], 1, start=0.0) == (3, 3.0)


def test_with_c_workers_the_filling_and_the_draining_are_left_out():
    # 10 calls from 2 workers: completions 3..8 (after the 2nd, up to the 8th: the 8th
    # completion issued the 10th call) over the time from the 2nd to the 8th.
    done = [0.5, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 5.0, 9.0]
    assert bench_rounds.steady_window(done, 2, start=0.0) == (6, pytest.approx(1.2))


def test_a_block_too_short_for_a_steady_state_is_refused():
    with pytest.raises(ValueError, match="no steady state"):
        bench_rounds.steady_window([1.0, 2.0, 3.0, 4.0], 2, start=0.0)


def test_a_block_too_short_for_a_steady_state_counts_every_call():
    block = bench_rounds.run_block(lambda _image: None, [b"a"], 4, 2)
    assert block.steady_images == 4 and block.steady_s == block.seconds


def test_a_block_of_a_closed_loop_keeps_c_calls_in_flight_and_counts_each():
    in_flight, most, started = [0], [0], [0]
    lock = threading.Lock()
    first_three = threading.Barrier(3)

    def call(_image: bytes) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            started[0] += 1
            first = started[0] <= 3
        if first:  # the first three meet: three workers were in flight at once
            first_three.wait(timeout=5)
        with lock:
            in_flight[0] -= 1

    readings = iter([{"router#1": 1.0}, {"router#1": 1.5}])
    block = bench_rounds.run_block(call, [b"a"], 12, 3, per_call=2, cpu=lambda: next(readings))
    assert most[0] == 3 and len(block.latencies_s) == 12
    assert block.images == 24 and block.steady_images == 2 * (12 - 2 * 3)
    assert block.cpu_s == {"router#1": 0.5}
    assert block.seconds >= max(block.latencies_s) and block.steady_s <= block.seconds


def test_a_call_that_fails_fails_the_block():
    def call(image: bytes) -> None:
        if image == b"refused":
            raise RuntimeError("POST /v1/detect: 429")

    with pytest.raises(RuntimeError, match="429"):
        bench_rounds.run_block(call, [b"a", b"refused"], 8, 2)


def test_a_cell_pools_its_blocks():
    blocks = [
        bench_rounds.Block([0.010, 0.020], 10, 0.5, 20, {"router#1": 0.02, "detector#2": 0.2}, 1.0),
        bench_rounds.Block([0.030, 0.040], 30, 0.5, 20, {"router#3": 0.02}, 1.0),
    ]
    cell = bench_rounds.cell("platform HTTP", 320, 4, blocks)
    assert cell.images_s == pytest.approx(40.0)  # the steady parts: 40 images in 1 s
    assert cell.whole_images_s == pytest.approx(20.0)  # all 40 in the blocks' 2 s
    assert cell.p50_ms == pytest.approx(25.0)
    assert cell.cpu_ms == pytest.approx({"router": 1.0, "detector": 5.0})  # per image of 40


def test_paused_stops_a_process_for_the_block_and_resumes_it():
    waits = "import sys; sys.stdin.read()  # bench_rounds pause test"
    child = subprocess.Popen([sys.executable, "-c", waits], stdin=subprocess.PIPE)
    try:
        process = psutil.Process(child.pid)
        with bench_rounds.paused([child.pid]):
            assert process.status() == psutil.STATUS_STOPPED
        assert process.status() != psutil.STATUS_STOPPED
        assert child.pid in bench_rounds.pids_matching(["bench_rounds pause test"])
    finally:
        child.kill()
        child.communicate()
