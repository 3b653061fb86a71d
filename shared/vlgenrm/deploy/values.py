"""The Helm chart's values, typed: the one source of the chart's ``values.yaml``,
``values.schema.json`` and ``README.md``.

Helm validates every install against that schema, so a wrong type or a missing endpoint
fails ``helm install``/``template`` with a message naming the field. ``config`` is the
platform's own settings document (``vlgenrm config show`` prints one); its schema comes
from :class:`vlgenrm.settings.Settings`, minus the connection and secret fields the chart
fills from ``kafka``, ``s3`` and Secrets. ``vlgenrm chart export`` (run from the repository
root) writes the three files; a test fails when one is stale.
"""

from __future__ import annotations

import copy
import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CHART_DIR = Path("charts/vlgenrm")
SCHEMA_PATH = CHART_DIR / "values.schema.json"
VALUES_PATH = CHART_DIR / "values.yaml"
README_PATH = CHART_DIR / "README.md"
_HOST_PORT = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}"
HOST_PORT = f"^{_HOST_PORT}$"
HOST_PORTS = f"^{_HOST_PORT}(,{_HOST_PORT})*$"
#: A Secret's name, or empty for "none".
SECRET_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"
#: Fields of ``config`` the chart owns: connections come from ``kafka``/``s3``, secrets from Secrets.
CHART_OWNED = {
    "bus": {
        "kind",
        "bootstrap_servers",
        "topic_prefix",
        "partitions",
        "replication_factor",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
    },
    "store": {"kind", "root", "endpoint", "bucket", "access_key", "secret_key", "secure", "region", "create_bucket"},
    "ray": {"address"},
}


class Values(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Quantities = dict[str, str | int | float]


class Resources(Values):
    """Kubernetes resource requests and limits (GPUs are set by ``gpus``, not here)."""

    requests: Quantities = Field(default_factory=dict, description="Requested cpu / memory / ephemeral-storage.")
    limits: Quantities = Field(default_factory=dict, description="Limits of cpu / memory / ephemeral-storage.")


class Scheduling(Values):
    """Where pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Taints the pods tolerate (e.g. nvidia.com/gpu).")
    affinity: dict[str, Any] = Field(default_factory=dict, description="Pod affinity / anti-affinity rules.")


class Disruption(Values):
    """A PodDisruptionBudget for the component (only rendered with more than one replica)."""

    enabled: bool = Field(True, description="Render a PodDisruptionBudget.")
    max_unavailable: int = Field(1, ge=0, description="Pods a voluntary disruption (node drain) may take at once.")


def _res(cpu: str, memory: str, memory_limit: str | None = None) -> Resources:
    """Requests, and a memory limit (none on CPU: throttling a data loader buys nothing)."""
    return Resources(requests={"cpu": cpu, "memory": memory}, limits={"memory": memory_limit or memory})


class ImageRef(Values):
    repository: str = Field(min_length=1, description="Image repository.")
    tag: str = Field("", description="Image tag; empty = the chart's appVersion.")


class Images(Values):
    """The two images: CPU (operator, experts, sampler) and GPU (trainer, rationale with vLLM, scorer)."""

    cpu: ImageRef = Field(default_factory=lambda: ImageRef(repository="ghcr.io/vlgenrm/vlgenrm-cpu"), description="docker/cpu.Dockerfile.")
    gpu: ImageRef = Field(default_factory=lambda: ImageRef(repository="ghcr.io/vlgenrm/vlgenrm-gpu"), description="docker/gpu.Dockerfile.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="Image pull policy.")
    pull_secrets: list[str] = Field(default_factory=list, description="Names of image pull Secrets.")


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaSasl(Values):
    """SASL credentials: a Secret the chart creates from ``username``/``password``, or ``existingSecret``."""

    mechanism: SaslMechanism | None = Field(None, description="PLAIN or SCRAM-SHA-256/512; null = no SASL.")
    username: str = Field("", description="User name (ignored with existingSecret).")
    password: str = Field("", description="Password (ignored with existingSecret).")
    existing_secret: str = Field("", pattern=SECRET_NAME, description="Secret holding the credentials.")
    username_key: str = Field("username", min_length=1, description="Key of the user name in existingSecret.")
    password_key: str = Field("password", min_length=1, description="Key of the password in existingSecret.")


class Kafka(Values):
    """The Kafka cluster everything talks through (external: the chart does not install one)."""

    # Required even though values.yaml has a default: unsetting it (null) must fail, not render.
    model_config = ConfigDict(json_schema_extra={"required": ["bootstrapServers"]})

    bootstrap_servers: str = Field("kafka-bootstrap.kafka.svc:9092", pattern=HOST_PORTS, description="Brokers, host:port[,host:port...]; required.")
    topic_prefix: str = Field("vlgenrm", min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Prefix of every topic name.")
    partitions: int = Field(8, ge=1, description="Partitions of topics this system creates (bounds consumers per stage).")
    replication_factor: int = Field(3, ge=1, description="Replication factor of topics this system creates.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="Broker protocol.")
    sasl: KafkaSasl = Field(default_factory=KafkaSasl)


class S3(Values):
    """The S3 object store (MinIO, AWS, ...; external: the chart does not install one)."""

    model_config = ConfigDict(json_schema_extra={"required": ["endpoint", "bucket"]})

    endpoint: str = Field("minio.minio.svc:9000", pattern=HOST_PORT, description="S3 endpoint host:port; required.")
    bucket: str = Field("vlgenrm", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="Bucket holding everything the platform writes.")
    secure: bool = Field(False, description="HTTPS towards the endpoint.")
    region: str = Field("us-east-1", min_length=1, description="Region (signature scope).")
    create_bucket: bool = Field(True, description="Create the bucket when it is missing.")
    access_key: str = Field("", description="Access key (ignored with existingSecret).")
    secret_key: str = Field("", description="Secret key (ignored with existingSecret).")
    existing_secret: str = Field("", pattern=SECRET_NAME, description="Secret holding the keys.")
    access_key_key: str = Field("access-key", min_length=1, description="Key of the access key in existingSecret.")
    secret_key_key: str = Field("secret-key", min_length=1, description="Key of the secret key in existingSecret.")


class Operator(Values):
    """The kopf operator that advances Iterations."""

    enabled: bool = Field(True, description="Deploy the operator.")
    replicas: int = Field(2, ge=0, description="Replicas; they peer, one is active, the others stand by.")
    watch_namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch (Roles there); empty = the whole cluster (a ClusterRole).")
    peering: str = Field(
        "",
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
        description="kopf peering name shared by the replicas; empty = the release's full name (releases never peer).",
    )
    log_format: Literal["json", "plain"] = Field("json", description="json: one structured object per line.")
    liveness_port: int = Field(8080, ge=1, le=65535, description="Port of kopf's liveness endpoint.")
    resources: Resources = Field(default_factory=lambda: _res("100m", "256Mi", memory_limit="512Mi"))
    scheduling: Scheduling = Field(default_factory=Scheduling)
    disruption: Disruption = Field(default_factory=Disruption)


class StageService(Values):
    """A stage service: consumes its task topic, writes shards to the store."""

    enabled: bool = Field(True, description="Deploy this service.")
    replicas: int = Field(1, ge=0, description="Consumers in the service's group (at most the topic's partitions do work).")
    image: Literal["cpu", "gpu"] = Field("cpu", description="Which image runs it.")
    gpus: int = Field(0, ge=0, description="GPUs per pod (resource gpuResource).")
    metrics_port: int = Field(9090, ge=1, le=65535, description="Prometheus metrics port (also the probes').")
    resources: Resources = Field(default_factory=lambda: _res("500m", "2Gi", memory_limit="4Gi"))
    scheduling: Scheduling = Field(default_factory=Scheduling)
    disruption: Disruption = Field(default_factory=Disruption)
    extra_env: list[dict[str, Any]] = Field(default_factory=list, description="More container env entries.")


class RayGroup(Values):
    """A group of Ray pods (KubeRay head or workers)."""

    replicas: int = Field(1, ge=0, description="Pods in the group (workers; the head is always one).")
    min_replicas: int = Field(0, ge=0, description="Autoscaling floor (workers).")
    max_replicas: int = Field(4, ge=0, description="Autoscaling ceiling (workers).")
    gpus: int = Field(0, ge=0, description="GPUs per pod (resource gpuResource).")
    resources: Resources = Field(default_factory=lambda: _res("2", "8Gi"))
    scheduling: Scheduling = Field(default_factory=Scheduling)


def _head() -> RayGroup:
    return RayGroup(replicas=1, min_replicas=1, max_replicas=1, gpus=0, resources=_res("1", "4Gi"))


def _gpu_workers() -> RayGroup:
    return RayGroup(replicas=1, min_replicas=1, max_replicas=4, gpus=1, resources=_res("4", "32Gi"))


class Trainer(StageService):
    """The trainer: a consumer of training tasks that runs Ray Train on a KubeRay RayCluster (or an external Ray)."""

    image: Literal["cpu", "gpu"] = Field("gpu", description="Which image runs it (the Ray cluster runs the GPU image).")
    ray_address: str = Field("", description="An existing Ray cluster (ray://host:10001); empty = the chart's RayCluster.")
    head: RayGroup = Field(default_factory=_head, description="RayCluster head pod.")
    workers: RayGroup = Field(default_factory=_gpu_workers, description="RayCluster GPU workers (Ray Train workers run here).")
    autoscaling: bool = Field(False, description="KubeRay in-tree autoscaling between minReplicas and maxReplicas.")


class ApiKeys(Values):
    """API keys of the scoring endpoint: a YAML list of {name, sha256, scopes} in a Secret."""

    existing_secret: str = Field("", pattern=SECRET_NAME, description="Secret holding the key list.")
    secret_key: str = Field("api-keys.yaml", min_length=1, description="Key of the list in the Secret.")
    keys: list[dict[str, Any]] = Field(default_factory=list, description="Keys for a chart-made Secret: {name, sha256, scopes} (vlgenrm serve --hash-key KEY).")


class Scorer(Values):
    """The scoring endpoint: a KubeRay RayService running the Serve app."""

    enabled: bool = Field(True, description="Deploy the scorer.")
    head: RayGroup = Field(default_factory=_head, description="RayService head pod (HTTP proxy, ingress).")
    workers: RayGroup = Field(default_factory=_gpu_workers, description="RayService GPU workers (GenRM replicas).")
    autoscaling: bool = Field(False, description="KubeRay in-tree autoscaling of the workers, following Serve's replicas (config.serving.min/max_replicas).")
    api_keys: ApiKeys = Field(default_factory=ApiKeys)
    disruption: Disruption = Field(default_factory=Disruption)


class NetworkPolicies(Values):
    """Ingress rules for the chart's pods (egress stays open: Kafka, S3 and DNS are external)."""

    enabled: bool = Field(True, description="Render NetworkPolicies.")
    scorer_from: list[dict[str, Any]] = Field(default_factory=list, description="NetworkPolicyPeers that may call the scorer; empty = anyone.")
    kuberay_from: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}],
        description="NetworkPolicyPeers of the KubeRay operator (dashboard, Serve config and health checks of the Ray heads).",
    )
    metrics_from: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        description="NetworkPolicyPeers that may scrape metrics ports.",
    )


class ServiceAccount(Values):
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the workloads' ServiceAccount (e.g. IAM roles for S3).")


class ChartValues(Values):
    """Values of the vlgenrm Helm chart."""

    name_override: str = Field("", description="Replaces the chart name in resource names.")
    fullname_override: str = Field("", description="Replaces the release-chart prefix of resource names.")
    image: Images = Field(default_factory=Images)
    kafka: Kafka = Field(default_factory=Kafka)
    s3: S3 = Field(default_factory=S3)
    config: dict[str, Any] = Field(default_factory=dict, description="Platform settings (Settings, snake_case), e.g. log_level, worker, serving.")
    gpu_resource: str = Field("nvidia.com/gpu", min_length=1, description="Extended resource name of a GPU.")
    ray_version: str = Field("2.60.0", pattern=r"^\d+\.\d+\.\d+$", description="Ray version inside the images (KubeRay's rayVersion).")
    operator: Operator = Field(default_factory=Operator, description="The kopf operator that advances Iterations.")
    experts: StageService = Field(
        default_factory=lambda: StageService(resources=_res("1", "4Gi", memory_limit="8Gi")),
        description="The vision experts service (detector, OCR, attributes): verifies claims.",
    )
    rationale: StageService = Field(
        default_factory=lambda: StageService(image="gpu", gpus=1, resources=_res("2", "16Gi", memory_limit="32Gi")),
        description="The rationale service: expert-grounded critiques (vLLM, transformers or an OpenAI-compatible engine).",
    )
    sampler: StageService = Field(
        default_factory=lambda: StageService(resources=_res("1", "4Gi", memory_limit="8Gi")),
        description="The sampler service: margin-based rejection sampling, and the evaluation stage.",
    )
    trainer: Trainer = Field(default_factory=Trainer, description="The trainer: consumes training tasks, runs Ray Train on a RayCluster.")
    scorer: Scorer = Field(default_factory=Scorer, description="The scoring endpoint (Ray Serve on a KubeRay RayService).")
    network_policy: NetworkPolicies = Field(default_factory=NetworkPolicies)
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)
    pod_security_context: dict[str, Any] = Field(
        default_factory=lambda: {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        description="Pod securityContext of every pod.",
    )
    security_context: dict[str, Any] = Field(
        default_factory=lambda: {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        description="Container securityContext of every container.",
    )
    tmp_size_limit: str = Field("8Gi", description="Size of the emptyDir mounted at /tmp (the root filesystem is read-only).")
    shm_size_limit: str = Field("4Gi", description="Memory-backed emptyDir at /dev/shm for the stage services and Ray pods (Ray's object store, NCCL, vLLM).")


def settings_schema() -> dict[str, Any]:
    """JSON Schema of ``config``: :class:`Settings` without the chart-owned fields, closed to typos."""
    from vlgenrm.settings import Settings

    schema = Settings.model_json_schema(by_alias=False)  # config is snake_case: the names load_settings reads
    defs = schema.pop("$defs", {})
    for section, fields in CHART_OWNED.items():
        ref = schema["properties"][section].get("$ref", "")
        target = defs[ref.split("/")[-1]] if ref else schema["properties"][section]
        for name in fields:
            target["properties"].pop(name, None)
    for node in [schema, *defs.values()]:
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
    return schema | {"$defs": defs}


def json_schema() -> dict[str, Any]:
    """``values.schema.json``: the values model plus the settings schema under ``config``."""
    schema = ChartValues.model_json_schema(by_alias=True)
    config = settings_schema()
    config_defs = config.pop("$defs")
    defs = schema.setdefault("$defs", {})
    for name, body in config_defs.items():
        assert name not in defs or defs[name] == body, f"definition {name} clashes"
        defs[name] = body
    config.pop("title", None)
    schema["properties"]["config"] = copy.deepcopy(config) | {"description": schema["properties"]["config"]["description"]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema"} | schema


def render_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def _yaml_lines(model: BaseModel, indent: int = 0) -> list[str]:
    pad, lines = "  " * indent, []
    for name, field in type(model).model_fields.items():
        value, key = getattr(model, name), field.alias or name
        doc = field.description or (type(value).__doc__ if isinstance(value, BaseModel) else None)
        if doc:
            lines += [f"{pad}# {line.strip()}" for line in doc.strip().splitlines() if line.strip()]
        if isinstance(value, BaseModel):
            lines += [f"{pad}{key}:", *_yaml_lines(value, indent + 1)]
            continue
        dumped = yaml.safe_dump({key: value.value if isinstance(value, StrEnum) else value}, sort_keys=False, default_flow_style=False, width=1000)
        lines += [pad + line for line in dumped.rstrip("\n").splitlines()]
    return lines


def render_values() -> str:
    """``values.yaml``: every default, each with its field's description as a comment."""
    header = [
        "# Values of the vlgenrm chart. Generated by `vlgenrm chart export` from vlgenrm.deploy.values;",
        "# values.schema.json (same source) validates what you set. Kafka and S3 are external: point",
        "# kafka.bootstrapServers and s3.endpoint at yours.",
        "",
    ]
    return "\n".join(header + _yaml_lines(ChartValues())) + "\n"


def _value_rows(model: BaseModel, prefix: str = "") -> list[str]:
    rows = []
    for name, field in type(model).model_fields.items():
        value, key = getattr(model, name), prefix + (field.alias or name)
        if isinstance(value, BaseModel):
            rows += _value_rows(value, key + ".")
            continue
        shown = json.dumps(value.value if isinstance(value, StrEnum) else value)
        rows.append(f"| `{key}` | `{shown}` | {(field.description or '').replace('|', '/')} |")
    return rows


def render_readme() -> str:
    """The chart's README: how to install, and every value with its default and meaning."""
    lines = [
        "# vlgenrm Helm chart",
        "",
        "Trains and serves vision-language generative reward models (VL-GenRM) on Kubernetes: the",
        "Iteration operator, the stage services (experts, rationale, sampler, trainer), a KubeRay",
        "RayCluster for training and a RayService for the scoring endpoint. Needs the KubeRay operator,",
        "a Kafka cluster and an S3 store (the chart installs neither Kafka nor MinIO).",
        "",
        "```bash",
        "helm install vlgenrm charts/vlgenrm -n vlgenrm --create-namespace \\",
        "  --set kafka.bootstrapServers=my-kafka-bootstrap.kafka.svc:9092 --set s3.endpoint=minio.minio.svc:9000 \\",
        "  --set s3.existingSecret=vlgenrm-s3",
        "kubectl apply -n vlgenrm -f examples/iteration.yaml",
        "```",
        "",
        "docs/deploy.md in the repository explains the parts, the operator's privileges and the images.",
        "`config` takes the platform's settings document (`vlgenrm config show`), validated by",
        "`values.schema.json`. This file, `values.yaml` and `values.schema.json` are generated by",
        "`vlgenrm chart export` from `vlgenrm.deploy.values`.",
        "",
        "## Values",
        "",
        "| key | default | description |",
        "|---|---|---|",
        *_value_rows(ChartValues()),
    ]
    return "\n".join(lines) + "\n"


def rendered() -> dict[Path, str]:
    """Each generated chart file (its path in the repository) and the text it should hold."""
    return {SCHEMA_PATH: render_schema(), VALUES_PATH: render_values(), README_PATH: render_readme()}


def stale_files(root: Path) -> list[Path]:
    """The generated chart files under the repository ``root`` that differ from what the code renders."""
    return [root / path for path, text in rendered().items() if not (root / path).is_file() or (root / path).read_text() != text]


def export(root: Path) -> list[Path]:
    """Write the generated chart files under the repository ``root``; returns their paths."""
    written = []
    for path, text in rendered().items():
        (root / path).write_text(text)
        written.append(root / path)
    return written
