"""The soak's 2-minute version (`scripts/soak.py`, 20 minutes in docs/reliability.md):
three tenants (one dedicated, two shared) under mixed load through `make run`, a key
rotation, a model swap and a policy change applied with `tenantctl apply --wait` in the
middle, every process's RSS sampled. Run in its own process, as an operator runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

RSS_LIMIT_PCT = 5.0


def test_two_minutes_of_mixed_load_with_changes_fail_nothing_and_leak_nothing(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--minutes", "2",
         "--sample-s", "10", "--warmup-s", "40", "--rss-limit", str(RSS_LIMIT_PCT),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.exists(), proc.stderr[-4000:]
    figures = json.loads(out.read_text())
    summary = {k: v for k, v in figures.items() if k != "rss_samples"}
    assert figures["failed"] == {}, summary
    # Each change reached the clients: the old key refused, version 2 answering, the
    # new confidence floor obeyed (the script waits for each and records it).
    assert set(figures["events"]) == {"key_rotation", "model_swap", "policy_change"}, summary
    assert figures["events"]["key_rotation"]["old_key_refused"] is True
    for tenant in ("acme", "globex", "initech"):
        assert figures["answered"][tenant] > 50, summary
        assert figures["billed"][tenant] == figures["answered"][tenant], summary
    assert len(figures["rss_samples"]) >= 10, summary
    assert figures["rss"]["total_growth_pct"] < RSS_LIMIT_PCT, figures["rss"]
    assert proc.returncode == 0, proc.stdout[-2000:]
