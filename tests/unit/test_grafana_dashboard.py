"""configs/grafana-dashboard.json: in sync with its generator, and every query names a
series that serve_app/observability/metrics.py really exports."""

from __future__ import annotations

import importlib.util
import json
import re

from tests.conftest import ROOT

DASHBOARD = ROOT / "configs" / "grafana-dashboard.json"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_grafana_dashboard", ROOT / "scripts" / "make_grafana_dashboard.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_dashboard_is_the_generators_output():
    assert DASHBOARD.read_text() == _generator().render()


def test_every_query_names_an_exported_series():
    defined = set(
        re.findall(
            r'"(yoloserve_[a-z0-9_]+)"',
            (ROOT / "serve_app" / "observability" / "metrics.py").read_text(),
        )
    )
    assert len(defined) >= 12
    used = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"ray_(yoloserve_[a-z0-9_]+)", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in defined, (panel["title"], name)
                used.add(base)
    assert used == defined  # every series has a panel
