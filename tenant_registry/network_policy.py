"""Kubernetes ``NetworkPolicy`` (networking.k8s.io/v1): its schema and who it admits.

The RayService's pods listen on more than Serve's HTTP port: the GCS (6379), the
dashboard and job API (8265, which runs code), the Ray client (10001), the dashboard
agent (52365), metrics (8080) and Ray's object and worker ports. ``kuberay-cluster.yaml``
carries a policy that opens only the HTTP port to everyone; this module checks such a
policy offline, strictly (``SCHEMA``, the API's own fields, closed), and answers
"may this peer reach this port?" (``admits``) the way the API defines it, so a test can
ask the question of the shipped manifest rather than of its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _LABELS,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_PEER = {
    "type": "object",
    "properties": {
        "podSelector": _SELECTOR,
        "namespaceSelector": _SELECTOR,
        "ipBlock": {
            "type": "object",
            "required": ["cidr"],
            "properties": {
                "cidr": {"type": "string"},
                "except": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}
_PORT = {
    "type": "object",
    "properties": {
        # The API takes a number or a container port's name; numbers only here, so
        # what a rule opens can be read without the pods.
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "endPort": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
    },
}
_RULE = {
    "type": "object",
    "properties": {
        "from": {"type": "array", "items": _PEER},
        "to": {"type": "array", "items": _PEER},
        "ports": {"type": "array", "items": _PORT},
    },
}
# The fields of networking.k8s.io/v1 NetworkPolicy this project may use. Closed (every
# object forbids unknown keys): the API server would drop a misspelled one silently,
# and a policy that lost its ``from`` admits everyone.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": API_VERSION},
        "kind": {"const": KIND},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": _LABELS,
                "annotations": _LABELS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["podSelector"],
            "properties": {
                "podSelector": _SELECTOR,
                "policyTypes": {
                    "type": "array",
                    "items": {"enum": ["Ingress", "Egress"]},
                    "uniqueItems": True,
                },
                "ingress": {"type": "array", "items": _RULE},
                "egress": {"type": "array", "items": _RULE},
            },
        },
    },
}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector matches ``labels`` (``{}`` matches everything)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


@dataclass(frozen=True)
class Peer:
    """Who opens a connection: a pod (its namespace's labels and its own) or, with no
    namespace, a client outside the cluster."""

    namespace: str | None = None
    namespace_labels: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)

    def labels_of_namespace(self) -> dict[str, str]:
        if self.namespace is None:
            return {}
        return {NAMESPACE_NAME_LABEL: self.namespace, **self.namespace_labels}


def _peer_matches(entry: dict[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in entry:
        # Pod IPs are not modelled; an outside client matches a block only by luck of
        # its address, so this answers for the worst case: a block admits it.
        return peer.namespace is None
    if peer.namespace is None:
        return False  # selectors only ever match pods
    pods, namespaces = entry.get("podSelector"), entry.get("namespaceSelector")
    if namespaces is None and peer.namespace != policy_namespace:
        return False  # a podSelector alone looks in the policy's own namespace
    if namespaces is not None and not selects(namespaces, peer.labels_of_namespace()):
        return False
    return pods is None or selects(pods, peer.pod_labels)


def _port_matches(entry: dict[str, Any], port: int, protocol: str) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    if "port" not in entry:
        return True
    return int(entry["port"]) <= port <= int(entry.get("endPort", entry["port"]))


def admits(
    policy: dict[str, Any],
    *,
    pod_labels: dict[str, str],
    port: int,
    peer: Peer,
    policy_namespace: str = "default",
    protocol: str = "TCP",
) -> bool:
    """Whether ``policy`` lets ``peer`` connect to ``port`` of a pod with ``pod_labels``
    in ``policy_namespace`` (only this one policy considered: policies add up, so a pod
    no policy selects for ingress admits everything)."""
    spec = policy.get("spec") or {}
    if not selects(spec.get("podSelector") or {}, pod_labels):
        return True
    types = spec.get("policyTypes") or ["Ingress"]
    if "Ingress" not in types:
        return True
    for rule in spec.get("ingress") or []:
        peers = rule.get("from")
        ports = rule.get("ports")
        peer_ok = not peers or any(_peer_matches(e, peer, policy_namespace) for e in peers)
        port_ok = not ports or any(_port_matches(e, port, protocol) for e in ports)
        if peer_ok and port_ok:
            return True
    return False


def pod_templates(rayservice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, pod template) of every group of a RayService's cluster."""
    cluster = (rayservice.get("spec") or {}).get("rayClusterConfig") or {}
    out = [("spec.rayClusterConfig.headGroupSpec", (cluster.get("headGroupSpec") or {}))]
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        out.append((f"spec.rayClusterConfig.workerGroupSpecs[{i}]", group))
    return [(path, group.get("template") or {}) for path, group in out]


def unprotected_pods(policy: dict[str, Any], rayservice: dict[str, Any]) -> list[str]:
    """Groups of ``rayservice`` whose pods ``policy`` does not select (it would leave
    their Ray ports open), one line each."""
    selector = (policy.get("spec") or {}).get("podSelector") or {}
    if not selector:
        return []  # {} selects every pod of the namespace
    problems = []
    for path, template in pod_templates(rayservice):
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selects(selector, labels):
            problems.append(
                f"{path}.template.metadata.labels: NetworkPolicy "
                f"{(policy.get('metadata') or {}).get('name')!r} does not select these pods "
                f"(give them the labels of its spec.podSelector)"
            )
    return problems
