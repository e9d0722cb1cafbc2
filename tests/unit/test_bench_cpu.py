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
