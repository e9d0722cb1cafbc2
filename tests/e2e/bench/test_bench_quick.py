"""`scripts/bench.py --quick` end to end, so the benchmark cannot rot: raw, the naive
server and the platform (HTTP and handles) all answer, and the report has every cell."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_writes_a_complete_report(tmp_path):
    out = tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and " ms" not in line]
    systems = ("raw torch", "raw onnxruntime", "naive", "platform HTTP", "platform handle")
    for system in systems:
        for imgsz in (320, 640):
            for conc in (1, 4, 16):
                assert any(r.startswith(f"| {system} | {imgsz} | {conc} |") for r in rows), (
                    system, imgsz, conc,
                )  # fmt: skip
    assert "platform HTTP images/s / naive images/s, concurrency 16" in report
    assert "serving CPU ms per image, platform HTTP, concurrency 16" in report
    # The CPU table found the platform's processes by role: the detector and the router
    # spent CPU on every image, and the ingress (HAProxy) was found.
    cpu_header = next(
        r for r in report.splitlines() if r.startswith("| system | imgsz | concurrency | total ms")
    )
    columns = [c.strip() for c in cpu_header.strip("|").split("|")]
    platform_row = next(
        r
        for r in report.splitlines()
        if r.startswith("| platform HTTP | 320 | 16 |") and r.count("|") == cpu_header.count("|")
    )
    cpu = dict(zip(columns, [c.strip() for c in platform_row.strip("|").split("|")], strict=True))
    assert float(cpu["detector"]) > 0 and float(cpu["router"]) > 0
    # HAProxy (C) spends well under 0.05 ms on an image: found, if it rounds to 0.0.
    assert cpu["proxy"] != "" and float(cpu["proxy"]) >= 0
    assert "Quick smoke run" in report and "Machine:" in report
    assert "## Multiplexing" in report and "model loads" in report
    assert "## Scale from zero" in report and "answered 200 after" in report
