"""`scripts/measure_neighbours.py` with short phases, so the measurement cannot rot: every
phase measured, the steady tenant never failed, the quota took effect, and the
refusals-only phase refused everything (mostly at HAProxy, every refusal audited once)
and found the serving processes' CPU. (Its
targets are figures of the full run, docs/isolation.md, not of 6-second phases.)"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_the_neighbours_measurement_runs_every_phase(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "measure_neighbours.py"), "--seconds", "6",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert out.exists(), proc.stderr[-4000:]
    figures = json.loads(out.read_text())
    phases = {p["phase"]: p for p in figures["phases"]}
    assert list(phases) == [
        "none (alone)",
        "flooding, no quota",
        "flooding, quota 4 req/s, honours Retry-After",
        "flooding, quota 4 req/s, retries at once",
    ]
    for phase in phases.values():
        assert phase["steady_failed"] == {}, phase
        assert phase["steady_n"] >= 20, phase  # 5 images/s for 6 s, open loop
    assert phases["none (alone)"]["noisy"] == {}
    assert set(phases["flooding, no quota"]["noisy"]) == {"200"}
    at_once = phases["flooding, quota 4 req/s, retries at once"]["noisy"]
    assert set(at_once) == {"200", "429"} and at_once["429"] > at_once["200"]
    refusals = figures["refusals"]
    assert refusals["served"] == 0 and refusals["refused"] > 100, refusals
    # the serving processes were found (the figure itself is noise in 6 s: ~0.5 ms each)
    assert {"router", "proxy", "ledger", "ray"} <= set(refusals["by_role"]), refusals
    # every 429 the neighbour received is in the audit log once: most answered by HAProxy
    # itself (a window published by the router), tallied back and audited with a count
    audited = figures["audited"]
    assert audited["by_router"] + audited["by_ingress"] == audited["client"], audited
    assert audited["by_ingress"] > audited["by_router"], audited
    assert "p99 ratios to alone" in proc.stdout
