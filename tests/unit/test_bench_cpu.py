"""scripts/bench.py's CPU per image: summed by role from per-process differences, so a
process that exits during the measurement (a previous run's replica finishing its drain)
cannot turn a role's figure negative or zero."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench


def test_cpu_per_image_is_the_sum_of_each_processes_own_difference():
    readings = iter([
        {"router#1": 5.0, "router#2": 1.0, "detector#3": 2.0},  # before: #1 is draining
        {"router#2": 1.5, "detector#3": 6.0, "detector#4": 0.4},  # after: #1 gone, #4 new
    ])  # fmt: skip
    cell = bench.closed_loop(lambda _image: None, [b"a", b"b"], 4, 1, lambda: next(readings))
    assert cell.cpu_ms == {"router": 125.0, "detector": 1100.0}


def test_the_report_splits_serving_cpu_into_the_detector_and_everything_else():
    from bench import Cell, report

    cells = []
    for size in (320, 640):
        for system in ("raw torch", "raw onnxruntime"):
            for conc in (1, 4, 16):
                cpu = 25.0 if conc == 16 else 21.0  # both cores busy cost more per image
                cells.append(Cell(system, size, conc, 10, 11, 12, 50, {"engine": cpu},
                                  frugal_cpu_ms=19.0))  # fmt: skip
        for conc in (1, 4, 16):
            cells.append(Cell("naive", size, conc, 10, 11, 12, 25, {"server": 30.0}))
            roles = {"detector": 26.5, "router": 4.0, "proxy": 0.5, "ledger": 0.5, "ray": 2.0}
            cells.append(Cell("platform HTTP", size, conc, 12, 13, 14, 45, roles))
            cells.append(Cell("platform handle", size, conc, 12, 13, 14, 45, roles))
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1]
        for line in report(cells, "cmd", quick=True).splitlines()
        if line.startswith("| ") and " | " in line
    }
    assert rows["serving CPU ms per image, platform HTTP, concurrency 16"] == "14.50"  # 33.5-19
    outside = "its part outside the detector (router, proxy, ledger, pool, Ray), platform HTTP"
    assert rows[outside + ", concurrency 16"] == "7.00"
    detector = ("detector CPU ms per image minus raw onnxruntime's at concurrency 16 (both "
                "cores busy in each), platform HTTP")  # fmt: skip
    assert rows[detector] == "1.50"  # 26.5 - 25
