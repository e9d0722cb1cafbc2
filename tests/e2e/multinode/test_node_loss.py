"""A real multi-node cluster on this machine (`ray.cluster_utils.Cluster`, shaped like the
RayService: a head with no CPUs, a CPU worker, two pretend-GPU workers): one GPU worker
node, with one of the demo tenant's two replicas on it, is removed by force under load
and a new one joins. `scripts/multinode.py` runs it in its own process (its own Ray);
this checks its figures. Its longer run is in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SECONDS = 20
CLIENTS = 2
GAP_LIMIT_S = 3.0
REMOVE_AT_S = 5


def test_losing_a_gpu_node_under_load_fails_no_request_and_bills_exactly(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "multinode.py"), "--seconds", str(SECONDS),
         "--clients", str(CLIENTS), "--remove-at", str(REMOVE_AT_S), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.exists(), proc.stderr[-4000:]
    figures = json.loads(out.read_text())
    # The two replicas were on two nodes: removing one node lost exactly one replica.
    assert len(set(figures["nodes_before"])) == 2, figures
    assert REMOVE_AT_S <= figures["removed_at_s"] < SECONDS / 2, figures  # under load
    assert figures["failed"] == {}, figures
    assert figures["answered"] > 4 * CLIENTS, figures
    assert figures["longest_gap_s"] < GAP_LIMIT_S, figures
    # Started again on the node that joined, not on the survivor (one per node).
    assert figures["replica_rescheduled"], figures
    assert len(set(figures["nodes_after"])) == 2, figures
    assert not set(figures["nodes_before"]) >= set(figures["nodes_after"]), figures
    assert figures["billed"] == figures["answered"], figures
    assert proc.returncode == 0, proc.stdout[-2000:]
