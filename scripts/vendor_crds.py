"""Copy the v1 schemas of KubeRay's CRDs into ``tenant_registry/crds/`` (what
``tenantctl validate`` checks manifests against, so it works without the CRD files).

    python scripts/vendor_crds.py ../shared/crds

Each output file is the CRD's ``spec.versions[name=v1].schema.openAPIV3Schema``, unchanged,
as compact JSON with sorted keys; ``tests/unit/test_manifests.py`` checks the copies still
equal the CRDs when those are beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent.parent / "tenant_registry" / "crds"
PLURALS = {"rayservices": "RayService", "rayjobs": "RayJob", "rayclusters": "RayCluster"}


def v1_schema(crd_file: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_file.read_text(), Loader=loader)  # noqa: S506  (a safe loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd_dir", type=Path)
    args = parser.parse_args()
    for plural in PLURALS:
        source = args.crd_dir / f"ray.io_{plural}.yaml"
        target = OUT / f"ray.io_{plural}.v1.json"
        target.write_text(dump(v1_schema(source)))
        print(f"{source} -> {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
