"""The layout keeps its promises (docs/architecture.md): imports only point down the
rooms, the data plane never imports the control plane, and every module stays small
enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "serve_app"

# Lower ranks are further down. A module may import its own room, or any lower rank.
RANKS = {
    "constants": 0,
    "errors": 1,
    "wire": 1,
    "ray_compat": 1,
    "ride_through": 1,
    "numerals": 1,
    "store_settings": 2,
    "uploads_spec": 3,
    "config": 4,
    "config_file": 5,
    "blobs": 5,
    "directory": 6,
    "observability": 10,
    "models": 11,
    "auth": 11,
    "inference": 12,
    "quota": 13,
    "http": 14,
    "app": 20,
    "legacy": 20,
    "client": 20,
}
MAX_LINES = 400
MAX_ROUTER_CLASS_LINES = 250


def _room(module: str) -> str:
    """``serve_app.http.router`` -> ``http``."""
    return module.split(".")[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_every_room_and_top_level_module_has_a_rank():
    rooms = {_room(m) for m in _modules() if m != "serve_app"}
    assert rooms == set(RANKS), "give each new room or top-level module a rank here"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m != "serve_app"))
def test_imports_only_point_down(module):
    path = _modules()[module]
    mine = _room(module)
    upward = sorted(
        name
        for name in _imports(path)
        if name.startswith("serve_app.")
        and name.split(".")[1] in RANKS
        and _room(name) != mine
        and RANKS[_room(name)] >= RANKS[mine]
    )
    assert upward == [], f"{module} imports {upward}: move what they share further down"


def test_the_data_plane_never_imports_the_control_plane():
    offenders = [
        m
        for m, p in _modules().items()
        if any(n.startswith("tenant_registry") for n in _imports(p))
    ]
    assert offenders == []


def test_no_module_is_over_the_size_limit():
    long = {
        str(path.relative_to(ROOT)): n
        for folder in ("serve_app", "tenant_registry")
        for path in (ROOT / folder).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_router_deployment_class_stays_small():
    tree = ast.parse((PACKAGE / "http" / "router.py").read_text())
    [router] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Router"]
    assert router.end_lineno is not None
    assert router.end_lineno - router.lineno + 1 <= MAX_ROUTER_CLASS_LINES
    first_method = next(
        n for n in router.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)
    )
    assert first_method.name == "__call__"  # it reads top-down: the request path first
