"""The Helm chart, with the real Helm client and a real kube-apiserver: it lints; it renders with
default values and with every optional part on; the API server accepts every manifest (the
chart's CRDs and KubeRay's installed) and a real install, upgrade and uninstall; the operator's
RBAC grants what it needs and nothing more, proven with `kubectl auth can-i` and by running the
operator as its ServiceAccount; every Deployment's container runs as its pod would and passes
its probe; the scorer starts through the RayService import path; bad values fail with the
schema's message."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import localinfra  # scripts/infra, on sys.path through pytest's pythonpath
import pytest
import yaml

from tests.conftest import REPO, free_ports, wait_http_ok
from tests.support.kube import fresh_namespace
from vlgenrm.deploy.values import ChartValues
from vlgenrm.settings import load_settings

pytestmark = pytest.mark.integration
CHART = REPO / "charts" / "vlgenrm"
#: KubeRay's CRDs, kept beside the repository (read at test time, never copied into it).
EVERYTHING = Path(__file__).with_name("values-everything.yaml")
EXAMPLES = REPO / "examples"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
VALUE_SETS = {
    "default": [],
    "everything": ["-f", str(EVERYTHING)],
    "external-ray": ["--set", "trainer.rayAddress=ray://ray-head.ray.svc:10001", "--set", "scorer.enabled=false"],
    "existing-secrets": ["--set", "s3.existingSecret=minio-creds", "--set", "kafka.sasl.mechanism=PLAIN",
                         "--set", "kafka.sasl.existingSecret=kafka-creds", "--set", "scorer.apiKeys.existingSecret=scorer-keys"],
    "examples-dev": ["-f", str(EXAMPLES / "values-dev.yaml")],
    "examples-gpu": ["-f", str(EXAMPLES / "values-gpu.yaml")],
}


def as_installed(docs: list[dict], namespace: str) -> str:
    """As helm install sends them: namespaced objects without a namespace go to the release's."""
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"].setdefault("namespace", namespace)
    return yaml.safe_dump_all(docs)


def render(helm, *args: str, release: str = "vl", namespace: str = "vl") -> list[dict]:
    out = helm.run("template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """Every pod template: Deployments and the KubeRay heads and worker groups."""
    out = []
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == "Deployment":
            out.append((name, d["spec"]["template"]["spec"]))
        cluster = d["spec"].get("rayClusterConfig") if d["kind"] == "RayService" else d["spec"] if d["kind"] == "RayCluster" else None
        if cluster:
            out.append((f"{name}/head", cluster["headGroupSpec"]["template"]["spec"]))
            out += [(f"{name}/{g['groupName']}", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
    return out


# -- lint and render -------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "everything"])
def test_helm_lint_passes_strict(helm, values):
    out = helm.run("lint", "--strict", str(CHART), *VALUE_SETS[values])
    assert "0 chart(s) failed" in out.stdout, out.stdout


@pytest.mark.parametrize("values", ["default", "everything", "examples-dev"])
def test_rendered_manifests_are_tidy(helm, values):
    """No whitespace-only lines (an empty include left behind), no two objects of one kind and name."""
    out = helm.run("template", "vl", str(CHART), "--namespace", "vl", *VALUE_SETS[values]).stdout
    assert not [n for n, line in enumerate(out.splitlines(), 1) if line and not line.strip()]
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d]
    assert len(keys) == len(set(keys))


def test_default_render_has_every_part_and_safe_pods(helm):
    docs = render(helm)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "RayCluster", "RayService",
            "NetworkPolicy", "ClusterKopfPeering"} <= kinds, kinds
    assert set(by_kind(docs, "Deployment")) == {f"vl-vlgenrm-{c}" for c in ("operator", "experts", "rationale", "sampler", "trainer")}
    assert "Secret" not in kinds, "no credentials given, so no Secret"
    for name, pod in pod_specs(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}} in pod["volumes"], name
        if "operator" not in name:
            assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in pod["volumes"], name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
            assert {"name": "VLGENRM_CONFIG", "value": "/etc/vlgenrm/config.yaml"} in c["env"], name
            if "/" not in name:  # KubeRay adds its own probes to Ray containers
                assert {"livenessProbe", "readinessProbe"} <= set(c), name
    deployments = by_kind(docs, "Deployment")
    gpu = {n: c["resources"]["limits"].get("nvidia.com/gpu") for n, d in deployments.items() for c in d["spec"]["template"]["spec"]["containers"]}
    assert gpu == {"vl-vlgenrm-operator": None, "vl-vlgenrm-experts": None, "vl-vlgenrm-rationale": 1, "vl-vlgenrm-sampler": None,
                   "vl-vlgenrm-trainer": None}
    assert not deployments["vl-vlgenrm-experts"]["spec"]["template"]["spec"]["automountServiceAccountToken"]
    trainer_env = {e["name"]: e.get("value") for e in deployments["vl-vlgenrm-trainer"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert trainer_env["VLGENRM_RAY__ADDRESS"] == "ray://vl-vlgenrm-trainer-ray-head-svc.vl.svc:10001"
    head = by_kind(docs, "RayCluster")["vl-vlgenrm-trainer-ray"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    from tests.support.ray import RAY_CLIENT_HEAD_ENV

    assert RAY_CLIENT_HEAD_ENV.items() <= {e["name"]: e.get("value") for e in head["env"]}.items(), "the tested Ray Client head env"
    for cluster in (by_kind(docs, "RayCluster")["vl-vlgenrm-trainer-ray"]["spec"], by_kind(docs, "RayService")["vl-vlgenrm-scorer"]["spec"]["rayClusterConfig"]):
        worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 and cluster["rayVersion"] == ChartValues().ray_version


def test_everything_render_carries_every_option(helm):
    docs = render(helm, "-f", str(EVERYTHING))
    deployments, secrets = by_kind(docs, "Deployment"), by_kind(docs, "Secret")
    assert set(secrets) == {"vl-vlgenrm-s3", "vl-vlgenrm-kafka", "vl-vlgenrm-api-keys"}
    assert yaml.safe_load(secrets["vl-vlgenrm-api-keys"]["stringData"]["api-keys.yaml"])[0]["name"] == "rl-trainer"
    experts = deployments["vl-vlgenrm-experts"]
    pod = experts["spec"]["template"]["spec"]
    assert experts["spec"]["replicas"] == 2 and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and "podAntiAffinity" in pod["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/vlgenrm-gpu:0.1.0-test" and container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["VLGENRM_STORE__SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "vl-vlgenrm-s3", "key": "secret-key"}
    assert env["VLGENRM_BUS__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "vl-vlgenrm-kafka", "key": "password"}
    assert env["TESSDATA_PREFIX"]["value"].startswith("/usr/share")
    assert deployments["vl-vlgenrm-rationale"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    operator = deployments["vl-vlgenrm-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in operator["args"] and "--namespace=team-b" in operator["args"]
    assert {(r["metadata"]["namespace"]) for r in docs if r["kind"] == "Role"} == {"team-a", "team-b"}
    assert {(r["metadata"]["namespace"]) for r in docs if r["kind"] == "KopfPeering"} == {"team-a", "team-b"}
    assert "ClusterKopfPeering" not in {d["kind"] for d in docs}
    assert {p["metadata"]["name"] for p in docs if p["kind"] == "PodDisruptionBudget"} == {
        f"vl-vlgenrm-{c}" for c in ("operator", "experts", "rationale", "sampler", "trainer", "scorer")}
    trainer_ray = by_kind(docs, "RayCluster")["vl-vlgenrm-trainer-ray"]["spec"]
    assert trainer_ray["enableInTreeAutoscaling"] is True and trainer_ray["workerGroupSpecs"][0]["maxReplicas"] == 8
    scorer = by_kind(docs, "RayService")["vl-vlgenrm-scorer"]["spec"]["rayClusterConfig"]
    assert scorer["enableInTreeAutoscaling"] is True and scorer["workerGroupSpecs"][0]["minReplicas"] == 2
    mounts = scorer["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "api-keys", "mountPath": "/etc/vlgenrm-api-keys", "readOnly": True} in mounts
    scorer_policy = by_kind(docs, "NetworkPolicy")["vl-vlgenrm-scorer"]["spec"]["ingress"]
    assert any(rule.get("from") == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rl"}}}] for rule in scorer_policy)
    dashboard = [rule for rule in scorer_policy if {"port": 8265, "protocol": "TCP"} in rule.get("ports", [])]
    assert len(dashboard) == 1 and dashboard[0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}, \
        "only the KubeRay operator may reach a Ray dashboard (it runs jobs)"


def test_the_configmap_is_typed_settings_and_holds_no_secret(helm, tmp_path, monkeypatch):
    docs = render(helm, "-f", str(EVERYTHING))
    config_text = by_kind(docs, "ConfigMap")["vl-vlgenrm-config"]["data"]["config.yaml"]
    for secret in ("kafka-password", "s3-secret", "AKIAEXAMPLE"):
        assert secret not in config_text
    (tmp_path / "config.yaml").write_text(config_text)
    # What a pod sees: the file, plus the secrets as VLGENRM_* env from its Secrets.
    monkeypatch.setenv("VLGENRM_STORE__SECRET_KEY", "s3-secret")
    settings = load_settings(tmp_path / "config.yaml")
    assert settings.bus.kind == "kafka" and settings.bus.bootstrap_servers == "broker-0.kafka.svc:9093,broker-1.kafka.svc:9093"
    assert settings.bus.sasl_mechanism == "SCRAM-SHA-512" and settings.bus.security_protocol == "SASL_SSL"
    assert settings.store.kind == "s3" and settings.store.secure and settings.store.bucket == "vlgenrm-prod"
    assert settings.store.secret_key.get_secret_value() == "s3-secret"
    assert settings.worker.max_records == 4 and settings.log_level == "DEBUG"
    assert settings.serving.max_batch_size == 32 and settings.serving.namespace == "vl" and settings.serving.num_gpus == 1
    assert str(settings.serving.security.api_keys_file) == "/etc/vlgenrm-api-keys/api-keys.yaml"
    assert settings.serving.security.allowed_hosts == ["*.example.com"] and settings.serving.genrm.device == "auto"


def test_an_external_ray_replaces_the_raycluster(helm):
    docs = render(helm, *VALUE_SETS["external-ray"])
    assert "RayCluster" not in {d["kind"] for d in docs} and "RayService" not in {d["kind"] for d in docs}
    env = {e["name"]: e.get("value") for e in by_kind(docs, "Deployment")["vl-vlgenrm-trainer"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VLGENRM_RAY__ADDRESS"] == "ray://ray-head.ray.svc:10001"


def test_existing_secrets_are_referenced_not_created(helm):
    docs = render(helm, *VALUE_SETS["existing-secrets"])
    assert "Secret" not in {d["kind"] for d in docs}
    container = by_kind(docs, "Deployment")["vl-vlgenrm-sampler"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["VLGENRM_STORE__ACCESS_KEY"] == {"name": "minio-creds", "key": "access-key"}
    assert refs["VLGENRM_BUS__SASL_USERNAME"] == {"name": "kafka-creds", "key": "username"}
    scorer = by_kind(docs, "RayService")["vl-vlgenrm-scorer"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "api-keys", "secret": {"secretName": "scorer-keys"}} in scorer["volumes"]


def test_notes_tell_how_to_submit_an_iteration_and_reach_the_scorer(helm, cluster):
    # helm install asks the cluster for its version even in a client dry run: the test server answers.
    out = helm.run("install", "vl", str(CHART), "--namespace", "vl", "--dry-run=client", "--kubeconfig", str(cluster.kubeconfig),
                   "--set", f"operator.peering=notes-{uuid.uuid4().hex[:6]}").stdout
    notes = out[out.index("NOTES:"):]
    assert "kind: Iteration" in notes and "kubectl get iterations -n vl" in notes
    assert "port-forward -n vl svc/vl-vlgenrm-scorer-serve-svc 8000:8000" in notes
    assert "every call gets 401" in notes, "no API keys configured: the notes must say so"


# -- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "operator.replicas=two"], ["/operator/replicas", "want integer"]),
    (["--set", "kafka.bootstrapServers="], ["/kafka/bootstrapServers", "does not match pattern"]),
    (["--set-json", "s3.endpoint=null"], ["at '/s3'", "missing property 'endpoint'"]),
    (["--set", "rationale.image=tpu"], ["/rationale/image", "must be one of 'cpu', 'gpu'"]),
    (["--set", "experts.gpus=-1"], ["/experts/gpus", "minimum"]),
    (["--set", "config.bus.kind=memory"], ["/config/bus", "'kind' not allowed"]),  # the chart owns the connections
    (["--set", "config.worker.max_records=0"], ["/config/worker/max_records", "minimum"]),
    (["--set", "config.serving.max_batch_sise=8"], ["/config/serving", "max_batch_sise"]),
    (["--set", "trainer.workers.replicas=many"], ["/trainer/workers/replicas", "want integer"]),
    (["--set", "operatr.replicas=1"], ["'operatr' not allowed"]),
])
def test_bad_values_fail_with_the_schema_message(helm, args, expected):
    proc = helm.run("template", "vl", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"{args} rendered"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


def test_sasl_without_credentials_names_the_missing_value(helm):
    proc = helm.run("template", "vl", str(CHART), "--set", "kafka.sasl.mechanism=PLAIN", check=False)
    assert proc.returncode != 0 and "kafka.sasl.username is required" in proc.stderr, proc.stderr


# -- the real API server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(kube_server):
    """The test kube-apiserver with the chart's CRDs and KubeRay's installed."""
    for crd in [*sorted((CHART / "crds").glob("*.yaml")), *sorted(localinfra.kuberay_crds().glob("ray.io_*.yaml"))]:
        kube_server.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd), timeout=180)
    for name in ("iterations.vlgenrm.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev",
                 "rayclusters.ray.io", "rayservices.ray.io"):
        kube_server.wait_crd_established(name)
    return kube_server


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_every_manifest_is_accepted_by_the_api_server(helm, cluster, values):
    namespace = fresh_namespace(cluster, "chart")
    release = f"r{uuid.uuid4().hex[:5]}"
    args = VALUE_SETS[values]
    for watched in ChartValues.model_validate(_values(args)).operator.watch_namespaces:
        cluster.run_kubectl("create", "namespace", watched, check=False)  # shared by runs: may exist
    docs = render(helm, *args, release=release, namespace=namespace)
    proc = cluster.run_kubectl("apply", "--dry-run=server", "-f", "-", input=as_installed(docs, namespace), check=False)
    assert proc.returncode == 0, proc.stderr
    applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(docs), proc.stdout


def _values(args: list[str]) -> dict:
    """The -f file among helm arguments, as a dict (enough for the namespaces to create)."""
    return yaml.safe_load(Path(args[args.index("-f") + 1]).read_text()) if "-f" in args else {}


def test_the_example_iteration_is_accepted(cluster):
    namespace = fresh_namespace(cluster, "chart")
    proc = cluster.run_kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLES / "iteration.yaml"), check=False)
    assert proc.returncode == 0 and "created (server dry run)" in proc.stdout, proc.stderr


def install_operator_rbac(helm, kube, *args: str) -> tuple[str, str, str]:
    """Apply (for real) the operator's ServiceAccount, RBAC and peering; returns namespace, release, account."""
    namespace, release = fresh_namespace(kube, "op"), f"r{uuid.uuid4().hex[:5]}"
    docs = render(helm, *args, "--show-only", "templates/operator/serviceaccount.yaml", "--show-only", "templates/operator/rbac.yaml",
                  "--show-only", "templates/operator/peering.yaml", release=release, namespace=namespace)
    kube.run_kubectl("apply", "-f", "-", input=as_installed(docs, namespace))
    return namespace, release, f"{release}-vlgenrm-operator"


def can_i(kube, namespace: str, account: str, verb: str, resource: str, where: str | None) -> bool:
    scope = ["-n", where] if where else ["--all-namespaces"]
    proc = kube.run_kubectl("auth", "can-i", verb, resource, *scope, f"--as=system:serviceaccount:{namespace}:{account}", check=False)
    return proc.stdout.strip() == "yes"


NEEDED = [("watch", "iterations.vlgenrm.io"), ("list", "iterations.vlgenrm.io"), ("patch", "iterations.vlgenrm.io"),
          ("patch", "iterations.vlgenrm.io/status"), ("create", "events")]
#: What the operator must never be able to do (it reads no Secrets at all, creates no workloads).
FORBIDDEN = [("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("create", "deployments.apps"), ("delete", "iterations.vlgenrm.io"),
             ("create", "iterations.vlgenrm.io"), ("*", "*"), ("create", "rolebindings.rbac.authorization.k8s.io"),
             ("impersonate", "serviceaccounts"), ("create", "serviceaccounts/token"), ("patch", "configmaps")]


def test_cluster_wide_operator_rbac_is_least_privilege(helm, cluster):
    namespace, _, account = install_operator_rbac(helm, cluster)
    other = fresh_namespace(cluster, "other")
    for where in (namespace, other, None):
        for verb, resource in NEEDED:
            assert can_i(cluster, namespace, account, verb, resource, where), (verb, resource, where)
        for verb, resource in FORBIDDEN:
            assert not can_i(cluster, namespace, account, verb, resource, where), (verb, resource, where)
    assert can_i(cluster, namespace, account, "patch", "clusterkopfpeerings.kopf.dev", None)
    assert not can_i(cluster, namespace, account, "delete", "customresourcedefinitions.apiextensions.k8s.io", None)


def test_namespaced_operator_rbac_stops_at_its_namespaces(helm, cluster):
    watched = f"team-{uuid.uuid4().hex[:6]}"
    cluster.run_kubectl("create", "namespace", watched)
    namespace, _, account = install_operator_rbac(helm, cluster, "--set", f"operator.watchNamespaces={{{watched}}}")
    other = fresh_namespace(cluster, "other")
    for verb, resource in NEEDED:
        assert can_i(cluster, namespace, account, verb, resource, watched), (verb, resource)
        assert not can_i(cluster, namespace, account, verb, resource, other), (verb, resource, "outside its namespaces")
        assert not can_i(cluster, namespace, account, verb, resource, None), (verb, resource, "cluster-wide")
    for verb, resource in FORBIDDEN:
        assert not can_i(cluster, namespace, account, verb, resource, watched), (verb, resource)
    assert can_i(cluster, namespace, account, "patch", "kopfpeerings.kopf.dev", watched)
    assert not can_i(cluster, namespace, account, "patch", "clusterkopfpeerings.kopf.dev", None)


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_the_operator_works_with_only_its_service_account(helm, cluster, tmp_path, mode):
    """Sufficiency, not just can-i: the real operator, authenticated as the chart's ServiceAccount,
    handles an Iteration (finalizer, status, Event) and lets it be deleted, with no 403."""
    watched = f"team-{uuid.uuid4().hex[:6]}"
    cluster.run_kubectl("create", "namespace", watched)
    extra = [] if mode == "cluster-wide" else ["--set", f"operator.watchNamespaces={{{watched}}}"]
    namespace, release, account = install_operator_rbac(helm, cluster, *extra)
    token = cluster.service_account_token(namespace, account)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    args = [f"--peering={release}-vlgenrm", "--priority=100"] + ([] if mode == "cluster-wide" else [f"--namespace={watched}"])
    env = {"KUBECONFIG": str(kubeconfig), "VLGENRM_BUS__KIND": "memory", "VLGENRM_STORE__KIND": "local",
           "VLGENRM_STORE__ROOT": str(tmp_path / "store"), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    log = tmp_path / "operator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlgenrm.operators.iteration", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        iteration = {"apiVersion": "vlgenrm.io/v1alpha1", "kind": "Iteration", "metadata": {"name": "rbac-check"},
                     "spec": {"dataset": "absent", "evalSet": "absent", "baseModel": "s3://nowhere/model"}}
        cluster.run_kubectl("apply", "-n", watched, "-f", "-", input=json.dumps(iteration))
        body = _wait(lambda: _get(cluster, watched, "rbac-check"), lambda b: b.get("status", {}).get("phase") == "Failed", log)
        assert body["status"]["conditions"] and "absent" in body["status"]["message"], body["status"]
        assert body["metadata"]["finalizers"], "the operator could not add its finalizer"
        events = json.loads(cluster.run_kubectl("get", "events", "-n", watched, "-o", "json").stdout)["items"]
        assert any(e["involvedObject"]["name"] == "rbac-check" and e["reason"] == "MissingInput" for e in events), events
        cluster.run_kubectl("delete", "iteration", "rbac-check", "-n", watched, "--wait=false")
        _wait(lambda: _get(cluster, watched, "rbac-check"), lambda b: b == {}, log)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert "Forbidden" not in text and " 403" not in text, text[-4000:]


def _get(kube, namespace: str, name: str) -> dict:
    out = kube.run_kubectl("get", "iteration", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _wait(fetch, predicate, log: Path, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = fetch()
        if predicate(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"timed out; last: {json.dumps(body)[:1500]}\n--- operator ---\n{log.read_text()[-4000:]}")


def test_helm_install_upgrade_and_uninstall_on_the_api_server(helm, cluster):
    """The real install path (helm's own ordering, CRD handling and release records), not only a
    dry run: install with defaults, upgrade to every option, uninstall. No controllers run here,
    so pods never start; the objects are created, changed and removed for real."""
    namespace, release = fresh_namespace(cluster, "helm"), f"r{uuid.uuid4().hex[:5]}"
    for watched in ("team-a", "team-b"):
        cluster.run_kubectl("create", "namespace", watched, check=False)
    common = [str(CHART), "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)]
    helm.run("install", release, *common)
    deployments = json.loads(cluster.run_kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(deployments) == 5 and all(d["spec"]["replicas"] >= 1 for d in deployments)
    assert cluster.run_kubectl("get", "rayservice", f"{release}-vlgenrm-scorer", "-n", namespace, check=False).returncode == 0
    helm.run("upgrade", release, *common, "-f", str(EVERYTHING))
    experts = json.loads(cluster.run_kubectl("get", "deployment", f"{release}-vlgenrm-experts", "-n", namespace, "-o", "json").stdout)
    assert experts["spec"]["replicas"] == 2
    assert cluster.run_kubectl("get", "role", f"{release}-vlgenrm-operator", "-n", "team-a", check=False).returncode == 0
    assert cluster.run_kubectl("get", "clusterrole", f"{release}-vlgenrm-operator", check=False).returncode != 0, \
        "the upgrade to watched namespaces must remove the cluster-wide grant"
    status = helm.run("status", release, "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)).stdout
    assert "STATUS: deployed" in status and "REVISION: 2" in status
    helm.run("uninstall", release, "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig))
    left = cluster.run_kubectl("get", "deployments,configmaps,networkpolicies,rayclusters,rayservices", "-n", namespace,
                               "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout
    assert left.strip() == "", left


@pytest.mark.slow
def test_the_scorer_starts_from_the_chart_config_through_the_rayservice_import_path(helm, s3_server, local_ray, tmp_path, monkeypatch):
    """What a RayService pod does: the ConfigMap's config.yaml as VLGENRM_CONFIG, the S3 keys as
    env from the Secret, Serve importing serveConfigV2's import_path; here on a local Ray Serve
    and the test S3 server, with a tiny model."""
    import httpx
    from ray import serve

    from tests.conftest import s3_settings
    from vlgenrm.genrm.model import upload_checkpoint
    from vlgenrm.genrm.tiny import build_tiny_genrm
    from vlgenrm.store.s3 import S3Store

    bucket = f"vlgenrm-chart-{uuid.uuid4().hex[:6]}"
    store = S3Store(s3_settings(s3_server, bucket=bucket))
    model = upload_checkpoint(build_tiny_genrm(tmp_path / "tiny", "qwen2_vl", seed=0), store, "checkpoints/chart/model")
    serving = {"model": model, "num_cpus": 0.5, "ingress_num_cpus": 0.1, "genrm": {"device": "cpu"}, "security": {"require_api_key": False}}
    docs = render(helm, "--set", f"s3.endpoint={s3_server.endpoint}", "--set", f"s3.bucket={bucket}", "--set", "scorer.workers.gpus=0",
                  "--set-json", f"config.serving={json.dumps(serving)}")
    (tmp_path / "config.yaml").write_text(by_kind(docs, "ConfigMap")["vl-vlgenrm-config"]["data"]["config.yaml"])
    monkeypatch.setenv("VLGENRM_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.setenv("VLGENRM_STORE__ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("VLGENRM_STORE__SECRET_KEY", s3_server.secret_key)
    service = by_kind(docs, "RayService")["vl-vlgenrm-scorer"]
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    module, _, attr = app["import_path"].partition(":")
    builder = getattr(__import__(module, fromlist=[attr]), attr)
    port = free_ports()[0]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(builder(app.get("args", {})), name=app["name"], route_prefix=app["route_prefix"], blocking=False)
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(url + "/readyz")
        models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        assert [m["id"] for m in models] == [model]
        image = base64.b64encode(_png()).decode()
        scored = httpx.post(url + "/v1/score", json={"image": image, "question": "What colour is the square?", "responses": ["It is red."]},
                            timeout=60)
        assert scored.status_code == 200, scored.text
        assert 0 <= scored.json()["scores"][0]["reward"] <= 1
    finally:
        serve.shutdown()


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (220, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("component", ["operator", "experts", "rationale", "sampler", "trainer"])
def test_each_deployment_runs_as_its_pod_would_and_passes_its_probes(helm, cluster, kafka_server, s3_server, tmp_path, component):
    """The container exactly as rendered: its command and args, its env with the Secrets' values,
    the ConfigMap's config.yaml; against the test Kafka, S3 and API server. It must pass its
    startup/readiness probe (the HTTP GET the kubelet would make) and stop cleanly on SIGTERM."""
    import httpx

    port, namespace = free_ports()[0], fresh_namespace(cluster, "pod")
    port_value = "operator.livenessPort" if component == "operator" else f"{component}.metricsPort"
    docs = render(helm, "--set", f"kafka.bootstrapServers={kafka_server.bootstrap_servers}", "--set", "kafka.replicationFactor=1",
                  "--set", f"kafka.topicPrefix=chart-{uuid.uuid4().hex[:6]}", "--set", f"s3.endpoint={s3_server.endpoint}",
                  "--set", f"s3.accessKey={s3_server.access_key}", "--set", f"s3.secretKey={s3_server.secret_key}",
                  "--set", "s3.bucket=vlgenrm-chart-pods", "--set", f"{port_value}={port}",
                  "--set", f"operator.watchNamespaces={{{namespace}}}", release="vl", namespace=namespace)
    if component == "operator":  # its peering object, as the chart installs it
        cluster.run_kubectl("apply", "-f", "-", input=as_installed([d for d in docs if d["kind"] == "KopfPeering"], namespace))
    pod = by_kind(docs, "Deployment")[f"vl-vlgenrm-{component}"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    secrets = {name: d["stringData"] for name, d in by_kind(docs, "Secret").items()}
    (tmp_path / "config.yaml").write_text(by_kind(docs, "ConfigMap")["vl-vlgenrm-config"]["data"]["config.yaml"])
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(cluster.kubeconfig)}  # in a pod: the ServiceAccount's token
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secrets[ref["name"]][ref["key"]] if ref else item["value"]
    env |= {"VLGENRM_CONFIG": str(tmp_path / "config.yaml"), "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    command = container["command"]
    assert command[0] == "python"
    log = tmp_path / f"{component}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *command[1:], *container.get("args", [])], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        probe = container["readinessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        url = f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}"
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(url, timeout=2).status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert status == 200, f"{url}: {status}\n{log.read_text()[-3000:]}"
        time.sleep(2)  # let it connect to Kafka / the API server before the stop
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.terminate()
        code = proc.wait(pod["terminationGracePeriodSeconds"] if "terminationGracePeriodSeconds" in pod else 30)
    assert code == 0, f"exit {code} on SIGTERM\n{log.read_text()[-3000:]}"
