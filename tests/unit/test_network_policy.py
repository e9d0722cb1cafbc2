"""The RayService's NetworkPolicy: who may reach which port of its pods, asked of the
shipped manifest, and the semantics of the evaluator that answers (the API's rules)."""

from __future__ import annotations

import pytest
import yaml

from tenant_registry.cli import main as tenantctl
from tenant_registry.errors import InvalidInput
from tenant_registry.kuberay import DASHBOARD_AGENT_PORT, METRICS_PORT, SERVE_PORT
from tenant_registry.manifests import validate_documents
from tenant_registry.network_policy import Peer, admits, pod_templates
from tests.conftest import ROOT

MANIFEST = ROOT / "kuberay-cluster.yaml"
GCS, DASHBOARD, CLIENT, A_WORKER_PORT = 6379, 8265, 10001, 10005


def _docs() -> list:
    return list(yaml.safe_load_all(MANIFEST.read_text()))


def _kind(docs, kind):
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _pods() -> list[tuple[dict, set[int]]]:
    """(labels, container ports) of every pod group of the shipped RayService."""
    out = []
    for _, template in pod_templates(_kind(_docs(), "RayService")):
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        out.append((template["metadata"]["labels"], ports))
    return out


OUTSIDE = Peer()  # a client beyond the cluster (through a LoadBalancer / NodePort)
OTHER_NAMESPACE = Peer(namespace="team-b", pod_labels={"app": "curious"})
SAME_NAMESPACE_STRANGER = Peer(namespace="default", pod_labels={"app": "other-app"})
OWN_POD = Peer(namespace="default", pod_labels={"app.kubernetes.io/name": "yoloserve"})
OPERATOR = Peer(namespace="ray-system", pod_labels={"app.kubernetes.io/name": "kuberay-operator"})
OPERATOR_NAMESPACE_OTHER_POD = Peer(namespace="ray-system", pod_labels={"app": "x"})
PROMETHEUS = Peer(namespace="monitoring", pod_labels={"app": "prometheus"})
RAY_PORTS = [GCS, DASHBOARD, CLIENT, METRICS_PORT, DASHBOARD_AGENT_PORT, A_WORKER_PORT]


def _reach(peer: Peer, port: int) -> bool:
    policy = _kind(_docs(), "NetworkPolicy")
    answers = {admits(policy, pod_labels=labels, port=port, peer=peer) for labels, _ in _pods()}
    assert len(answers) == 1, "every pod group must be treated alike"
    return answers.pop()


def test_every_pod_group_is_selected_and_every_ray_port_it_opens_is_closed_to_outsiders():
    policy = _kind(_docs(), "NetworkPolicy")
    for labels, ports in _pods():
        assert SERVE_PORT in ports and len(ports) > 1
        for port in ports - {SERVE_PORT}:
            for peer in (OUTSIDE, OTHER_NAMESPACE, SAME_NAMESPACE_STRANGER):
                assert not admits(policy, pod_labels=labels, port=port, peer=peer), (port, peer)


@pytest.mark.parametrize(
    "peer", [OUTSIDE, OTHER_NAMESPACE, SAME_NAMESPACE_STRANGER, OPERATOR, PROMETHEUS]
)
def test_serves_http_port_is_open_to_everyone(peer):
    assert _reach(peer, SERVE_PORT)


@pytest.mark.parametrize("port", RAY_PORTS)
def test_rays_ports_answer_the_clusters_own_pods_only(port):
    assert _reach(OWN_POD, port)
    for peer in (OUTSIDE, OTHER_NAMESPACE, SAME_NAMESPACE_STRANGER, OPERATOR_NAMESPACE_OTHER_POD):
        assert not _reach(peer, port), peer


def test_the_operator_reaches_the_dashboard_and_agent_and_nothing_else_of_rays():
    assert _reach(OPERATOR, DASHBOARD) and _reach(OPERATOR, DASHBOARD_AGENT_PORT)
    for port in (GCS, CLIENT, METRICS_PORT, A_WORKER_PORT):
        assert not _reach(OPERATOR, port), port


def test_prometheus_scrapes_metrics_only():
    assert _reach(PROMETHEUS, METRICS_PORT)
    for port in (GCS, DASHBOARD, CLIENT, DASHBOARD_AGENT_PORT):
        assert not _reach(PROMETHEUS, port), port


# ------------------------------------------------------------------ strict validation


def _rejected(docs) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate_documents(docs)
    return str(caught.value)


def test_a_misspelled_field_would_have_opened_everything_and_is_rejected():
    docs = _docs()
    rule = _kind(docs, "NetworkPolicy")["spec"]["ingress"][1]
    rule["frm"] = rule.pop("from")  # the API would drop it: a rule open to every peer
    message = _rejected(docs)
    assert "document 1:" in message and "spec.ingress[1].frm: unknown field" in message


def test_a_pod_group_the_policy_does_not_select_is_rejected():
    docs = _docs()
    service = _kind(docs, "RayService")
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["template"]["metadata"] = {}
    assert (
        "spec.rayClusterConfig.workerGroupSpecs[1].template.metadata.labels: NetworkPolicy "
        "'yoloserve-ray-ports' does not select these pods" in _rejected(docs)
    )


def test_named_ports_and_wrong_api_version_are_rejected():
    docs = _docs()
    policy = _kind(docs, "NetworkPolicy")
    policy["spec"]["ingress"][0]["ports"][0]["port"] = "serve"
    policy["apiVersion"] = "networking.k8s.io/v1beta1"
    message = _rejected(docs)
    assert "apiVersion: must be networking.k8s.io/v1" in message
    assert "spec.ingress[0].ports[0].port: 'serve' is not of type 'integer'" in message


def test_tenantctl_validate_names_the_bad_document(tmp_path, capsys):
    docs = _docs()
    _kind(docs, "NetworkPolicy")["spec"]["podSelectr"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    assert tenantctl(["validate", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "document 1: NetworkPolicy manifest rejected" in err and "podSelectr" in err


# ------------------------------------------------------------------ the evaluator


def _policy(*rules, selector=None):
    return {
        "spec": {"podSelector": selector or {"matchLabels": {"a": "1"}}, "ingress": list(rules)}
    }


def test_a_pod_the_policy_does_not_select_is_not_restricted_by_it():
    assert admits(_policy(), pod_labels={"a": "2"}, port=22, peer=OUTSIDE)
    assert not admits(_policy(), pod_labels={"a": "1"}, port=22, peer=OUTSIDE)


def test_a_pod_selector_alone_looks_in_the_policys_namespace():
    policy = _policy({"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]})
    web_here = Peer(namespace="prod", pod_labels={"role": "web"})
    web_there = Peer(namespace="dev", pod_labels={"role": "web"})
    common = {"pod_labels": {"a": "1"}, "port": 80, "policy_namespace": "prod"}
    assert admits(policy, peer=web_here, **common)
    assert not admits(policy, peer=web_there, **common)


def test_namespace_and_pod_selector_in_one_peer_must_both_match():
    peer_rule = {
        "namespaceSelector": {"matchLabels": {"team": "ml"}},
        "podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["x"]}]},
    }
    policy = _policy({"from": [peer_rule], "ports": [{"port": 8000, "endPort": 8010}]})
    ok = Peer(namespace="ml1", namespace_labels={"team": "ml"}, pod_labels={"role": "x"})
    common = {"pod_labels": {"a": "1"}}
    assert admits(policy, port=8005, peer=ok, **common)
    assert not admits(policy, port=8011, peer=ok, **common)
    assert not admits(
        policy, port=8005, peer=Peer(namespace="ml1", pod_labels={"role": "x"}), **common
    )
    wrong_pod = Peer(namespace="ml1", namespace_labels={"team": "ml"}, pod_labels={"role": "y"})
    assert not admits(policy, port=8005, peer=wrong_pod, **common)
    assert not admits(policy, port=8005, peer=ok, protocol="UDP", **common)


def test_egress_only_policy_leaves_ingress_open():
    policy = _policy()
    policy["spec"]["policyTypes"] = ["Egress"]
    assert admits(policy, pod_labels={"a": "1"}, port=6379, peer=OUTSIDE)
