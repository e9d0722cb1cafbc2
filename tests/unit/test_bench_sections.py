"""docs/benchmarks.md is written by two scripts: bench.py rewrites it whole and keeps the
sections bench_pool.py put between markers (``replace_section``, ``kept_sections``)."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench


def test_a_marked_section_is_replaced_in_place_and_kept_by_a_full_rewrite(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nold tables\n")
    bench.replace_section(doc, "shared pool at scale", "## Shared pool at scale\n\nrun 1\n")
    bench.replace_section(doc, "shared pool at scale", "## Shared pool at scale\n\nrun 2\n")
    bench.replace_section(doc, "shared pool at scale, serve placement", "### Serve\n\nrun 3\n")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nold tables\n")
    assert text.count("<!-- shared pool at scale -->") == 1 and "run 2" in text
    assert "run 1" not in text
    kept = bench.kept_sections(doc)
    assert kept.strip().startswith("<!-- shared pool at scale -->") and "run 2" in kept
    assert kept.count("<!-- /shared pool at scale, serve placement -->") == 1 and "run 3" in kept
    assert "old tables" not in kept
    doc.write_text("# Benchmarks\n\nnew tables\n" + kept)  # what bench.py writes
    assert bench.kept_sections(doc) == kept
