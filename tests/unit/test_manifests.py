"""KubeRay manifests: the checked-in ones against the real CRD schemas, the rendered one
against the registry it comes from, and mutations that strict validation must catch."""

from __future__ import annotations

import importlib.util
import re

import pytest
import yaml

from serve_app.constants import RAY_SERVE_ENV
from tenant_registry.cli import main as tenantctl
from tenant_registry.errors import InvalidInput
from tenant_registry.kuberay import RAY_VERSION, render_rayservice
from tenant_registry.manifests import (
    CRD_FILES,
    crd_schema,
    validate_documents,
    validate_manifest,
)
from tenant_registry.render import render_registry
from tests.conftest import ROOT

CRD_SOURCES = ROOT.parent / "shared" / "crds"
MANIFEST = ROOT / "kuberay-cluster.yaml"
RAYJOB = ROOT / "configs" / "batch-job.rayjob.yaml"


def _documents(path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _repo_manifests() -> list:
    """Every YAML file in the repository that holds a KubeRay resource."""
    found = []
    for path in sorted([*ROOT.glob("*.yaml"), *ROOT.glob("configs/*.yaml")]):
        docs = _documents(path)
        if any(str(d.get("apiVersion", "")).startswith("ray.io/") for d in docs):
            found.append(path)
    return found


def _of_kind(kind: str, path=MANIFEST) -> dict:
    (doc,) = [d for d in _documents(path) if d.get("kind") == kind]
    return doc


def _example_registry(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "example_tenants", ROOT / "scripts" / "example_tenants.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(tmp_path / "example.db")


def test_the_repository_ships_a_rayservice_and_a_rayjob():
    kinds = {d["kind"] for p in _repo_manifests() for d in _documents(p)}
    assert kinds == {"RayService", "RayJob", "NetworkPolicy"}


@pytest.mark.skipif(
    not CRD_SOURCES.is_dir(),
    reason="the KubeRay CRD files (../shared/crds) are not beside this checkout",
)
@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_vendored_schemas_are_the_crds_own(kind):
    plural = CRD_FILES[kind].split("_")[1].split(".")[0]
    crd = yaml.load(
        (CRD_SOURCES / f"ray.io_{plural}.yaml").read_text(),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    assert crd["spec"]["names"]["kind"] == kind
    assert crd_schema(kind) == v1["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("path", _repo_manifests(), ids=lambda p: p.name)
def test_manifest_validates_against_its_crd(path):
    from jsonschema import Draft7Validator

    docs = _documents(path)
    # The CRD's schema exactly as the API server has it ...
    for doc in docs:
        if doc["kind"] in CRD_FILES:
            errors = list(Draft7Validator(crd_schema(doc["kind"])).iter_errors(doc))
            assert errors == [], [e.message for e in errors]
    # ... and the strict checks (closed objects, the Serve config, GPU placement, the
    # NetworkPolicy selecting every pod).
    assert validate_documents(docs) == [d["kind"] for d in docs]


def test_serve_config_inside_the_rayservice_passes_serves_schema_and_ours():
    from ray.serve.schema import ServeDeploySchema

    from serve_app.config_file import ServeConfigFile

    serve = yaml.safe_load(_of_kind("RayService")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    parsed = ServeConfigFile.model_validate(serve)
    gpus = {t.id: t.resources.num_gpus for t in parsed.app().args.tenants}
    assert gpus == {"acme": 0.5, "globex": 0.25, "initech": 0.25, "umbrella": 1.0}
    assert parsed.http_options.host == "0.0.0.0" and parsed.proxy_location == "EveryNode"


def test_checked_in_manifest_is_what_the_example_registry_renders(tmp_path):
    reg = _example_registry(tmp_path)
    rendered = render_rayservice(render_registry(reg), reg.platform().kuberay)
    assert rendered == MANIFEST.read_text(), "run `make manifests` and commit the result"
    reg.close()
    out = tmp_path / "out.yaml"
    assert (
        tenantctl(
            [
                "--db",
                str(tmp_path / "example.db"),
                "render",
                "--format",
                "rayservice",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_text() == MANIFEST.read_text()


def test_ray_version_is_the_one_pyproject_pins_and_installs():
    import ray

    pin = re.search(r'"ray\[serve\]==([0-9.*]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None
    assert re.fullmatch(pin.group(1).replace(".", r"\.").replace("*", r"[0-9]+"), RAY_VERSION)
    assert ray.__version__ == RAY_VERSION
    assert _of_kind("RayService")["spec"]["rayClusterConfig"]["rayVersion"] == RAY_VERSION


def _cluster():
    return _of_kind("RayService")["spec"]["rayClusterConfig"]


def _containers(group):
    return group["template"]["spec"]["containers"]


def test_head_schedules_no_replicas_and_exports_metrics():
    head = _cluster()["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["metrics-export-port"] == "8080"
    ports = {p["containerPort"] for p in _containers(head)[0]["ports"]}
    assert {6379, 8265, 8000, 8080} <= ports


def test_gpu_group_requests_equal_limits_tolerates_the_taint_and_scales_from_zero():
    cluster = _cluster()
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    resources = _containers(gpu)[0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] >= 1
    assert resources["requests"] == resources["limits"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "template"
    ]["spec"]["tolerations"]
    cpu = groups["cpu"]
    assert "nvidia.com/gpu" not in _containers(cpu)[0]["resources"]["limits"]
    assert cpu["minReplicas"] >= 1


def test_every_container_is_offline_and_gets_s3_credentials_only_from_a_secret():
    cluster = _cluster()
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for container in _containers(group):
            env = {e["name"]: e for e in container["env"]}
            assert env["YOLO_OFFLINE"]["value"] == "1"
            assert env["YOLO_AUTOINSTALL"]["value"] == "false"
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[name]
                assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "yoloserve-s3"
            ports = {p["containerPort"] for p in container["ports"]}
            assert 8080 in ports
            # Ray Serve's switches are read at `ray start`: every pod gets the same ones.
            for name, value in RAY_SERVE_ENV.items():
                assert env[name]["value"] == value, name
            wrapper = env["RAY_SERVE_HAPROXY_BINARY_PATH"]["value"]
            assert wrapper == "/home/ray/yoloserve/scripts/haproxy_loopback.sh"
    text = MANIFEST.read_text()
    assert "yk_" not in text and '"sha256"' not in text and "api_keys" not in text
    serve = yaml.safe_load(_of_kind("RayService")["spec"]["serveConfigV2"])
    router = serve["applications"][0]["deployments"][0]["user_config"]
    # tenants (key digests among them) travel by the directory, not in the manifest
    assert router["tenants"] == [] and router["directory"]["uri"].startswith("s3://")


# ------------------------------------------------------------------ mutations


def _doc():
    return _of_kind("RayService")


def _job():
    return yaml.safe_load(RAYJOB.read_text())


def _with_serve(mutate):
    doc = _doc()
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    mutate(serve)
    doc["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
    return doc


def _rejected(doc) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate_manifest(doc)
    return str(caught.value)


MUTATIONS = {
    "misspelled key": (
        lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(minReplica=1),
        "spec.rayClusterConfig.workerGroupSpecs[0].minReplica: unknown field",
    ),
    "misspelled key in a pod template": (
        lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][
            0
        ].update(imagePullPolicyy="Always"),
        "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].imagePullPolicyy: "
        "unknown field",
    ),
    "missing required field": (
        lambda d: d["spec"]["rayClusterConfig"].pop("headGroupSpec"),
        "spec.rayClusterConfig.headGroupSpec: required field is missing",
    ),
    "missing group name": (
        lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][1].pop("groupName"),
        "spec.rayClusterConfig.workerGroupSpecs[1].groupName: required field is missing",
    ),
    "wrong type": (
        lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(maxReplicas="four"),
        "spec.rayClusterConfig.workerGroupSpecs[0].maxReplicas: 'four' is not of type 'integer'",
    ),
    "serveConfigV2 not a string": (
        lambda d: d["spec"].update(serveConfigV2={"applications": []}),
        "spec.serveConfigV2: {'applications': []} is not of type 'string'",
    ),
    "wrong apiVersion": (
        lambda d: d.update(apiVersion="ray.io/v1alpha1"),
        "apiVersion: must be ray.io/v1",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_rayservice_mutation_is_rejected_naming_the_path(name):
    mutate, needle = MUTATIONS[name]
    doc = _doc()
    mutate(doc)
    assert needle in _rejected(doc)


SERVE_MUTATIONS = {
    "misspelled deployment option": (
        lambda s: s["applications"][0]["deployments"][0].update(num_replica=2),
        "applications.0.deployments.0.num_replica",
    ),
    "misspelled autoscaling key": (
        lambda s: s["applications"][0]["args"]["tenants"][0]["autoscaling"].update(
            target_ongoing_request=3
        ),
        "applications.0.args.tenants.0.autoscaling.target_ongoing_request",
    ),
    "deployment the builder does not create": (
        lambda s: s["applications"][0]["deployments"].append({"name": "tenant-nobody"}),
        "deployment 'tenant-nobody' is not built by args",
    ),
    "GPU fraction above one": (
        lambda s: s["applications"][0]["args"]["tenants"][0]["resources"].update(num_gpus=1.5),
        "num_gpus above 1 must be a whole number",
    ),
    "negative GPUs": (
        lambda s: s["applications"][0]["args"]["tenants"][0]["resources"].update(num_gpus=-0.5),
        "applications.0.args.tenants.0.resources.num_gpus",
    ),
    "more GPUs than any worker has": (
        lambda s: s["applications"][0]["args"]["tenants"][3]["resources"].update(num_gpus=2),
        "applications[0].args.tenants[3].resources.num_gpus: a replica asks for 2 GPUs but "
        "the largest GPU worker has 1",
    ),
}


@pytest.mark.parametrize("name", sorted(SERVE_MUTATIONS))
def test_serve_config_mutation_inside_the_rayservice_is_rejected(name):
    mutate, needle = SERVE_MUTATIONS[name]
    message = _rejected(_with_serve(mutate))
    assert "spec.serveConfigV2" in message and needle in message


def test_a_gpu_replica_with_no_gpu_group_is_rejected():
    doc = _doc()
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"] = [
        g for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] != "gpu"
    ]
    assert "no group has GPUs" in _rejected(doc)


def test_two_gpu_workers_admit_a_two_gpu_replica():
    def two(s):
        s["applications"][0]["args"]["tenants"][3]["resources"]["num_gpus"] = 2

    doc = _with_serve(two)
    gpu = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    for key in ("requests", "limits"):
        gpu["template"]["spec"]["containers"][0]["resources"][key]["nvidia.com/gpu"] = 2
    assert validate_manifest(doc) == "RayService"


JOB_MUTATIONS = {
    "misspelled key": (
        lambda j: j["spec"].update(clusterSelectr={}),
        "spec.clusterSelectr: unknown field",
    ),
    "wrong type": (
        lambda j: j["spec"].update(entrypoint=["python", "x.py"]),
        "spec.entrypoint: ['python', 'x.py'] is not of type 'string'",
    ),
    "wrong type of a number": (
        lambda j: j["spec"].update(backoffLimit="none"),
        "spec.backoffLimit: 'none' is not of type 'integer'",
    ),
    "wrong kind": (lambda j: j.update(kind="RayJobs"), "kind: 'RayJobs' is not one of"),
}


@pytest.mark.parametrize("name", sorted(JOB_MUTATIONS))
def test_rayjob_mutation_is_rejected_naming_the_path(name):
    mutate, needle = JOB_MUTATIONS[name]
    job = _job()
    mutate(job)
    assert needle in _rejected(job)


def test_rayjob_runs_the_batch_script_on_s3_with_a_key_file():
    spec = _job()["spec"]
    assert "scripts/batch_detect.py s3://" in spec["entrypoint"]
    assert (
        "-o s3://" in spec["entrypoint"]
        and "--api-key-file /etc/yoloserve/batch/" in spec["entrypoint"]
    )
    assert spec["shutdownAfterJobFinishes"] is False and "ray.io/cluster" in spec["clusterSelector"]
    head = _cluster()["headGroupSpec"]["template"]["spec"]
    assert {"name": "batch-key", "mountPath": "/etc/yoloserve/batch", "readOnly": True} in head[
        "containers"
    ][0]["volumeMounts"]


# ------------------------------------------------------------------ the CLI


def test_tenantctl_validate_takes_manifests_and_names_the_bad_path(tmp_path, capsys):
    assert tenantctl(["validate", str(MANIFEST)]) == 0
    assert "valid RayService" in capsys.readouterr().err
    assert tenantctl(["validate", str(RAYJOB)]) == 0
    doc = _doc()
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert tenantctl(["validate", str(bad)]) != 0
    assert (
        "spec.rayClusterConfig.workerGroupSpecs[0].maxReplica: unknown field"
        in capsys.readouterr().err
    )


def test_platform_set_k8s_flags_reach_the_rendered_manifest(tmp_path):
    reg = _example_registry(tmp_path)
    reg.close()
    db = str(tmp_path / "example.db")
    assert (
        tenantctl(
            [
                "--db",
                db,
                "platform",
                "set",
                "--k8s-gpus-per-worker",
                "2",
                "--k8s-gpu-workers-max",
                "7",
                "--k8s-name",
                "detect-prod",
                "--k8s-operator-namespace",
                "kuberay",
            ]
        )
        == 0
    )
    out = tmp_path / "rs.yaml"
    assert tenantctl(["--db", db, "render", "--format", "rayservice", "-o", str(out)]) == 0
    doc = _of_kind("RayService", out)
    gpu = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert doc["metadata"]["name"] == "detect-prod" and gpu["maxReplicas"] == 7
    policy = _of_kind("NetworkPolicy", out)
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "detect-prod"}
    assert {"kubernetes.io/metadata.name": "kuberay"} in [
        peer.get("namespaceSelector", {}).get("matchLabels")
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
    ]
    assert _containers(gpu)[0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert tenantctl(["--db", db, "platform", "set", "--k8s-name", "Not_A_Name"]) != 0
