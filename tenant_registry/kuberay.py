"""Registry -> KubeRay ``RayService`` manifest, around the same Serve config as ``render``.

The manifest is a commented template with the rendered Serve config as its
``serveConfigV2`` string; only what differs on Kubernetes is changed in that config
(the proxy listens on every pod's interfaces). What the cluster looks like (image,
worker groups, the Secret holding S3 credentials) is ``KubeRaySettings``, kept in the
registry's platform settings.
"""

from __future__ import annotations

import copy
from string import Template
from typing import Any

import yaml
from pydantic import Field

from serve_app.constants import RAY_SERVE_ENV, ULTRALYTICS_ENV
from serve_app.wire import StrictModel

# Ray in the cluster's image: the one pyproject pins (a test checks both agree).
RAY_VERSION = "2.60.0"
SERVE_PORT = 8000
METRICS_PORT = 8080  # Ray's metrics agent on every node (Prometheus format)
DASHBOARD_PORT = 8265  # Ray's dashboard and job API (runs code: never beyond the cluster)
DASHBOARD_AGENT_PORT = 52365  # where KubeRay checks Serve's health on each pod
# The label KubeRay's Helm chart gives the operator's pods.
OPERATOR_POD_LABEL = "kuberay-operator"
PROJECT_DIR = "/home/ray/yoloserve"  # where the image holds this project
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$"


class KubeRaySettings(StrictModel):
    """The Kubernetes side of production; ``tenantctl platform set --k8s-*``."""

    name: str = Field("yoloserve", pattern=_DNS_LABEL, description="RayService name.")
    image: str = Field(
        f"ghcr.io/yoloserve/yoloserve:0.1.0-ray{RAY_VERSION}-gpu",
        min_length=1,
        description="Built from configs/Dockerfile: Ray, CUDA, this project and its models/.",
    )
    s3_secret: str = Field(
        "yoloserve-s3",
        pattern=_DNS_LABEL,
        description="Kubernetes Secret with access-key-id and secret-access-key.",
    )
    head_cpus: int = Field(2, ge=1)
    head_memory_gi: int = Field(8, ge=1)
    gpus_per_worker: int = Field(1, ge=1, le=16)
    gpu_worker_cpus: int = Field(8, ge=1)
    gpu_worker_memory_gi: int = Field(32, ge=1)
    gpu_workers_max: int = Field(4, ge=1)
    cpu_worker_cpus: int = Field(4, ge=1)
    cpu_worker_memory_gi: int = Field(8, ge=1)
    cpu_workers_min: int = Field(1, ge=0)
    cpu_workers_max: int = Field(4, ge=1)
    operator_namespace: str = Field(
        "ray-system",
        pattern=_DNS_LABEL,
        description="Namespace of the KubeRay operator: the only outsider let into the "
        "dashboard (it submits the Serve config and jobs).",
    )
    metrics_namespace: str = Field(
        "monitoring",
        pattern=_DNS_LABEL,
        description="Namespace whose pods (Prometheus) may scrape the metrics port.",
    )


def cluster_serve_config(serve_config: dict[str, Any]) -> dict[str, Any]:
    """The Serve config as it runs in pods: a proxy on every node, on every interface."""
    config = copy.deepcopy(serve_config)
    config["proxy_location"] = "EveryNode"
    # Inside a pod the proxy must listen beyond loopback; the Service fronts it.
    pod_http = {"host": "0.0.0.0", "port": SERVE_PORT}  # noqa: S104
    config["http_options"] = {**config.get("http_options", {}), **pod_http}
    return config


def render_rayservice(serve_config: dict[str, Any], settings: KubeRaySettings) -> str:
    """The RayService manifest (YAML text, comments kept) serving ``serve_config``."""
    serve_yaml = yaml.safe_dump(
        cluster_serve_config(serve_config), sort_keys=False, default_flow_style=False, width=1000
    )
    plain_env = {
        **ULTRALYTICS_ENV,
        "YOLOSERVE_MODEL_ROOT": PROJECT_DIR,
        **RAY_SERVE_ENV,
        # HAProxy through our wrapper: the client's address forwarded to the router
        # (X-Forwarded-For), its stats page kept to the pod's loopback.
        "RAY_SERVE_HAPROXY_BINARY_PATH": f"{PROJECT_DIR}/scripts/haproxy_loopback.sh",
    }
    env = [f"- {{name: {k}, value: {_quote(v)}}}" for k, v in plain_env.items()]
    for variable, key in (("AWS_ACCESS_KEY_ID", "access-key-id"),
                          ("AWS_SECRET_ACCESS_KEY", "secret-access-key")):  # fmt: skip
        env += [
            f"- name: {variable}",
            f"  valueFrom: {{secretKeyRef: {{name: {settings.s3_secret}, key: {key}}}}}",
        ]
    return _TEMPLATE.substitute(
        name=settings.name,
        ray_version=RAY_VERSION,
        image=settings.image,
        serve_port=SERVE_PORT,
        metrics_port=METRICS_PORT,
        dashboard_port=DASHBOARD_PORT,
        agent_port=DASHBOARD_AGENT_PORT,
        operator_namespace=settings.operator_namespace,
        operator_label=OPERATOR_POD_LABEL,
        metrics_namespace=settings.metrics_namespace,
        head_cpus=settings.head_cpus,
        head_memory=f"{settings.head_memory_gi}Gi",
        gpus=settings.gpus_per_worker,
        gpu_cpus=settings.gpu_worker_cpus,
        gpu_memory=f"{settings.gpu_worker_memory_gi}Gi",
        gpu_max=settings.gpu_workers_max,
        cpu_cpus=settings.cpu_worker_cpus,
        cpu_memory=f"{settings.cpu_worker_memory_gi}Gi",
        cpu_min=settings.cpu_workers_min,
        cpu_max=settings.cpu_workers_max,
        head_env=_indent("\n".join(env), 16),
        worker_env=_indent("\n".join(env), 18),
        serve_config=_indent(serve_yaml, 4),
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").split("\n"))


# Every container gets the same environment: ultralytics offline, the project root,
# and S3 credentials from a Secret (never inline).
_TEMPLATE = Template(
    """\
# Rendered by `tenantctl render --format rayservice` from the tenant registry.
# Do not edit by hand: change the registry (or `tenantctl platform set --k8s-*`)
# and render again. Check it with `tenantctl validate kuberay-cluster.yaml`.
apiVersion: ray.io/v1
kind: RayService
metadata:
  name: ${name}
  labels:
    app.kubernetes.io/name: ${name}
spec:
  # Only a serveConfigV2 change is applied in place (no pod restarts); a change to
  # rayClusterConfig makes KubeRay bring up a new cluster and switch over when ready.
  # The Service <name>-serve-svc only routes to pods whose Serve proxy is healthy
  # (KubeRay adds that readiness probe), and the RayService reports Ready only once
  # the application below is RUNNING: readiness comes from Serve itself.
  serveConfigV2: |
${serve_config}
  rayClusterConfig:
    rayVersion: "${ray_version}"  # the Ray pyproject.toml pins; the image must match
    # In-tree autoscaler: adds GPU workers when replicas ask for GPUs it does not
    # have, and CPU workers for the router, ledger and shared pool. It prefers
    # CPU-only nodes for CPU-only replicas, so GPUs are not spent on the router.
    enableInTreeAutoscaling: true
    autoscalerOptions:
      upscalingMode: Default
      idleTimeoutSeconds: 300  # an idle GPU node goes away after 5 minutes
    headGroupSpec:
      # The head runs the GCS, the Serve controller and a proxy, but no replicas:
      # num-cpus 0 keeps the scheduler from placing any there, so a busy tenant
      # can never starve the control plane.
      rayStartParams:
        num-cpus: "0"
        dashboard-host: "0.0.0.0"
        metrics-export-port: "${metrics_port}"
      template:
        metadata:
          labels: {app.kubernetes.io/name: ${name}}  # what the NetworkPolicy selects
        spec:
          containers:
            - name: ray-head
              image: ${image}
              ports:
                - {containerPort: 6379, name: gcs-server}
                - {containerPort: ${dashboard_port}, name: dashboard}
                - {containerPort: 10001, name: client}
                - {containerPort: ${serve_port}, name: serve}
                - {containerPort: ${metrics_port}, name: metrics}  # scrape every pod here
              env:
${head_env}
              # A batch job's API key (configs/batch-job.rayjob.yaml) is a file
              # from a Secret, never an environment variable in a manifest.
              volumeMounts:
                - {name: batch-key, mountPath: /etc/yoloserve/batch, readOnly: true}
              resources:
                requests: {cpu: "${head_cpus}", memory: ${head_memory}}
                limits: {cpu: "${head_cpus}", memory: ${head_memory}}
          volumes:
            - name: batch-key
              secret: {secretName: yoloserve-batch-key, optional: true}
    workerGroupSpecs:
      # GPU workers for dedicated tenants. Ray reads num-gpus from the
      # nvidia.com/gpu limit; fractional tenants (0.25, 0.5) share one GPU.
      - groupName: gpu
        replicas: 0
        minReplicas: 0  # no idle GPU bill: scaled up when a replica needs a GPU
        maxReplicas: ${gpu_max}
        rayStartParams:
          metrics-export-port: "${metrics_port}"
        template:
          metadata:
            labels: {app.kubernetes.io/name: ${name}}
          spec:
            # GPU nodes are usually tainted so nothing else lands there.
            tolerations:
              - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
            containers:
              - name: ray-worker
                image: ${image}
                ports:
                  - {containerPort: ${serve_port}, name: serve}
                  - {containerPort: ${metrics_port}, name: metrics}
                env:
${worker_env}
                # GPUs cannot be overcommitted: requests equal limits.
                resources:
                  requests: {cpu: "${gpu_cpus}", memory: ${gpu_memory}, nvidia.com/gpu: ${gpus}}
                  limits: {cpu: "${gpu_cpus}", memory: ${gpu_memory}, nvidia.com/gpu: ${gpus}}
      # CPU workers for the router, the quota ledger and the CPU shared pool.
      - groupName: cpu
        replicas: ${cpu_min}
        minReplicas: ${cpu_min}
        maxReplicas: ${cpu_max}
        rayStartParams:
          metrics-export-port: "${metrics_port}"
        template:
          metadata:
            labels: {app.kubernetes.io/name: ${name}}
          spec:
            containers:
              - name: ray-worker
                image: ${image}
                ports:
                  - {containerPort: ${serve_port}, name: serve}
                  - {containerPort: ${metrics_port}, name: metrics}
                env:
${worker_env}
                resources:
                  requests: {cpu: "${cpu_cpus}", memory: ${cpu_memory}}
                  limits: {cpu: "${cpu_cpus}", memory: ${cpu_memory}}
---
# Who may reach the pods above (needs a CNI that enforces NetworkPolicy: Calico,
# Cilium, …). Serve's HTTP port is the product: open to everyone (the router
# authenticates every call). Everything else — the GCS (6379), the dashboard and job
# API (${dashboard_port}, which runs code), the Ray client (10001), the dashboard agent
# (${agent_port}), Ray's object and worker ports — answers only this cluster's own pods,
# the KubeRay operator (it submits serveConfigV2 and jobs, and checks Serve's health),
# and, for metrics (${metrics_port}) only, Prometheus's namespace. An operator reaches
# the dashboard with `kubectl port-forward`, which a NetworkPolicy does not block.
# Egress stays open: replicas fetch weights from S3.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: ${name}-ray-ports
  labels:
    app.kubernetes.io/name: ${name}
spec:
  podSelector:
    matchLabels: {app.kubernetes.io/name: ${name}}
  policyTypes: [Ingress]
  ingress:
    - ports:
        - {port: ${serve_port}, protocol: TCP}
    - from:
        - podSelector:
            matchLabels: {app.kubernetes.io/name: ${name}}
    - from:
        - namespaceSelector:
            matchLabels: {kubernetes.io/metadata.name: ${operator_namespace}}
          podSelector:
            matchLabels: {app.kubernetes.io/name: ${operator_label}}
      ports:
        - {port: ${dashboard_port}, protocol: TCP}
        - {port: ${agent_port}, protocol: TCP}
    - from:
        - namespaceSelector:
            matchLabels: {kubernetes.io/metadata.name: ${metrics_namespace}}
      ports:
        - {port: ${metrics_port}, protocol: TCP}
"""
)
