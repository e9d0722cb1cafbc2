"""`scripts/bench_pool.py` end to end at a small size, so the benchmark cannot rot: six
tenants' distinct models on two pool replicas beside a single-model deployment; the
figures are read back from its JSON and its report."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_pool_quick_reports_every_figure(tmp_path):
    figures, doc = tmp_path / "pool.json", tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_pool.py"), "--tenants", "6",
         "--requests", "60", "--warmup", "30", "--connections", "4",
         "--work", str(tmp_path / "work"), "--json", str(figures), "-o", str(doc)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"pool/single images/s ratio: (\d+\.\d\d)", last)
    assert match, last
    f = json.loads(figures.read_text())
    assert float(match.group(1)) == round(f["pool_images_s"] / f["single_images_s"], 2)
    assert f["single_images_s"] > 0 and f["pool_images_s"] > 0
    assert 0 <= f["pool_hit_rate"] <= 1 and f["warmup_loads"] >= 1
    assert 2 <= f["tenants_served"] <= 6
    assert len(f["replicas"]) == 2  # both pool replicas answered what they hold
    for replica in f["replicas"].values():
        # six distinct weights: a network each, within the replica's budget
        assert replica["networks"] == replica["models"] and replica["bytes"] <= replica["max_bytes"]
    assert sum(r["models"] for r in f["replicas"].values()) >= f["tenants_served"]
    assert 0 < f["cache_load_ms_median"] < 5000
    report = doc.read_text()
    assert report.startswith("# Benchmarks\n") and "## Shared pool at scale" in report
    assert "<!-- shared pool at scale -->" in report and "hottest tenant" in report
