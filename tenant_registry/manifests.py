"""Strict offline checks of KubeRay manifests (``RayService``, ``RayJob``, ``RayCluster``)
and of the ``NetworkPolicy`` shipped beside them.

Three layers, each error naming its path in the file:

1. the CRD's own ``openAPIV3Schema`` (KubeRay v1.7.0, vendored in ``crds/``), made
   *closed*: an object that lists its properties accepts no others, which is what
   ``kubectl apply --validate=strict`` does (the API server would otherwise drop a
   misspelled field without a word);
2. for a RayService, its ``serveConfigV2`` string parsed as YAML and checked as Ray Serve
   would and strictly as this project does (``render.validate_config``);
3. placement: a replica asking for more GPUs than any worker group's pods have would
   stay pending forever, so it is an error here.

A file may hold several documents (``---``); a NetworkPolicy in the same file as a
RayService must select all of its pods.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib import resources
from typing import Any

import yaml

from tenant_registry import network_policy
from tenant_registry.errors import InvalidInput

API_VERSION = "ray.io/v1"
CRD_FILES = {
    "RayService": "ray.io_rayservices.v1.json",
    "RayJob": "ray.io_rayjobs.v1.json",
    "RayCluster": "ray.io_rayclusters.v1.json",
}
GPU_RESOURCE = "nvidia.com/gpu"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The v1 ``openAPIV3Schema`` of ``kind``'s CRD, as KubeRay ships it."""
    text = resources.files("tenant_registry.crds").joinpath(CRD_FILES[kind]).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy where every object schema with ``properties`` forbids unknown keys, unless
    it says otherwise (``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields``)."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


@cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft7Validator

    if kind == network_policy.KIND:
        return Draft7Validator(closed(network_policy.SCHEMA))
    return Draft7Validator(closed(crd_schema(kind)))


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_problems(doc: dict[str, Any], kind: str) -> list[str]:
    """What the (closed) CRD schema rejects, one line per problem, path first."""
    problems = []
    for error in _validator(kind).iter_errors(doc):
        where = _path(error.absolute_path)
        prefix = "" if where == "(top level)" else f"{where}."
        if error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - allowed):
                problems.append(f"{prefix}{key}: unknown field (not in the {kind} schema)")
        elif error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            for key in missing or [error.message]:
                problems.append(f"{prefix}{key}: required field is missing")
        else:
            problems.append(f"{where}: {error.message}")
    return sorted(set(problems))


def _gpus_per_pod(group: dict[str, Any]) -> float:
    containers = group.get("template", {}).get("spec", {}).get("containers", [])
    total = 0.0
    for container in containers:
        limit = container.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0)
        try:
            total += float(limit)
        except (TypeError, ValueError):
            continue  # the schema check reports a malformed quantity
    return total


def _replica_gpus(serve_config: dict[str, Any]) -> list[tuple[str, float]]:
    """(path, num_gpus) of every deployment's replica in a parsed Serve config."""
    out = []
    for a, app in enumerate(serve_config.get("applications", [])):
        args = app.get("args", {})
        for key in ("router", "shared_pool", "ledger"):
            gpus = args.get(key, {}).get("resources", {}).get("num_gpus", 0)
            out.append((f"applications[{a}].args.{key}.resources.num_gpus", float(gpus)))
        for t, tenant in enumerate(args.get("tenants", [])):
            gpus = tenant.get("resources", {}).get("num_gpus", 0)
            out.append((f"applications[{a}].args.tenants[{t}].resources.num_gpus", float(gpus)))
    return out


def placement_problems(serve_config: dict[str, Any], cluster: dict[str, Any]) -> list[str]:
    """Replicas that no pod of ``cluster`` (a RayCluster spec) could ever hold."""
    groups = [cluster.get("headGroupSpec", {}), *cluster.get("workerGroupSpecs", [])]
    largest = max((_gpus_per_pod(g) for g in groups), default=0.0)
    problems = []
    for path, gpus in _replica_gpus(serve_config):
        if gpus > largest:
            have = f"the largest GPU worker has {largest:g}" if largest else "no group has GPUs"
            problems.append(
                f"spec.serveConfigV2: {path}: a replica asks for {gpus:g} GPUs but {have} "
                f"(raise {GPU_RESOURCE} in a worker group or lower num_gpus)"
            )
    return problems


def validate_manifest(doc: dict[str, Any]) -> str:
    """Check a KubeRay manifest; returns its kind.

    Raises:
        InvalidInput: Listing every problem found, each with its path.
    """
    kind = doc.get("kind")
    if kind not in (*CRD_FILES, network_policy.KIND):
        raise InvalidInput(
            f"kind: {str(kind)[:40]!r} is not one of {', '.join(CRD_FILES)}, "
            f"{network_policy.KIND} (or give a Serve config, which has no kind)"
        )
    problems = []
    api_version = network_policy.API_VERSION if kind == network_policy.KIND else API_VERSION
    if doc.get("apiVersion") != api_version:
        problems.append(f"apiVersion: must be {api_version} (got {doc.get('apiVersion')!r})")
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append("metadata.name: required, lowercase letters, digits, '-' and '.'")
    problems += schema_problems(doc, kind)
    raw_spec = doc.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    if kind == "RayService" and isinstance(spec.get("serveConfigV2"), str):
        problems += _serve_config_problems(spec["serveConfigV2"], spec.get("rayClusterConfig"))
    elif kind == "RayService" and "serveConfigV2" not in spec:
        problems.append("spec.serveConfigV2: required here (the application to serve)")
    if problems:
        listing = "\n".join(f"  {p}" for p in problems)
        raise InvalidInput(f"{kind} manifest rejected:\n{listing}")
    return str(kind)


def validate_documents(docs: list[Any]) -> list[str]:
    """Check every document of a multi-document manifest file; returns their kinds.

    Raises:
        InvalidInput: Naming the document (its index and kind) and every problem.
    """
    kinds = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InvalidInput(f"document {i}: not a mapping (a manifest has kind, metadata …)")
        try:
            kinds.append(validate_manifest(doc))
        except InvalidInput as exc:
            raise InvalidInput(f"document {i}: {exc}") from None
    services = [d for d in docs if d.get("kind") == "RayService"]
    problems = [
        line
        for policy in docs
        if policy.get("kind") == network_policy.KIND
        for service in services
        for line in network_policy.unprotected_pods(policy, service)
    ]
    if problems:
        raise InvalidInput("NetworkPolicy rejected:\n" + "\n".join(f"  {p}" for p in problems))
    return kinds


def _serve_config_problems(text: str, cluster: Any) -> list[str]:
    from tenant_registry.render import validate_config

    try:
        serve_config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"spec.serveConfigV2: not YAML: {exc}"]
    try:
        validate_config(serve_config)
    except InvalidInput as exc:
        lines = str(exc).splitlines()
        return [f"spec.serveConfigV2: {lines[0]}"] + [
            f"spec.serveConfigV2: {line.strip()}" for line in lines[1:]
        ]
    if isinstance(cluster, dict):
        return placement_problems(serve_config, cluster)
    return []
