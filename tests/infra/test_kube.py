"""The local Kubernetes control plane (etcd + kube-apiserver + kubectl) that operator and chart tests use.

envtest-style: a real API server with RBAC, CRD validation and server-side apply, but no
controller-manager or scheduler. Every test works in a fresh namespace (namespaces never
finish deleting without the namespace controller).
"""

from __future__ import annotations

import json
from pathlib import Path

import localinfra
import pytest

from tests.support.kube import fresh_namespace

# A session fixture's setup counts against the first test that asks for it: on a machine
# without the build cache that is a 10+ minute build (`make infra-up` does it beforehand).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.io"},
    "spec": {
        "group": "example.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}, "color": {"type": "string"}},
                                # CEL runs inside the apiserver too.
                                "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "size must be at most 10"}],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(namespace: str, name: str, spec: dict[str, object]) -> str:
    return json.dumps({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": name, "namespace": namespace}, "spec": spec})


@pytest.fixture
def namespace(kube_server: localinfra.KubeApiServer) -> str:
    return fresh_namespace(kube_server, "t")


@pytest.fixture(scope="module")
def widget_crd(kube_server: localinfra.KubeApiServer) -> str:
    # CRDs are cluster-scoped and outlive the session (etcd keeps its data): apply is idempotent.
    kube_server.run_kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    kube_server.wait_crd_established("widgets.example.io")
    return "widgets.example.io"


def test_kubectl_and_server_report_the_release(kube_server: localinfra.KubeApiServer) -> None:
    versions = json.loads(kube_server.run_kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == localinfra.KUBE_VERSION
    assert versions["serverVersion"]["gitVersion"] == localinfra.KUBE_VERSION
    assert kube_server.api_get("/readyz") == (200, b"ok")
    assert kube_server.kubeconfig.is_file() and kube_server.kubectl.is_file()


def test_tokens_authenticate_and_rbac_authorises(kube_server: localinfra.KubeApiServer) -> None:
    assert kube_server.api_get("/api/v1/namespaces")[0] == 200
    status, body = kube_server.api_get("/api/v1/namespaces", token=kube_server.user_token)
    assert status == 403, body  # authenticated, but the plain user has no grants
    assert f'User "{kube_server.user_name}" cannot list' in json.loads(body)["message"]
    assert kube_server.api_get("/api/v1/namespaces", token="not-a-token")[0] == 401
    # Impersonation, as the admin (system:masters may impersonate anyone).
    who = json.loads(kube_server.run_kubectl("auth", "whoami", "-o", "json", as_user="someone", as_groups=("team-a",)).stdout)["status"]["userInfo"]
    assert who["username"] == "someone" and "team-a" in who["groups"]


def test_crd_schema_and_cel_rules_are_enforced(kube_server: localinfra.KubeApiServer, widget_crd: str, namespace: str) -> None:
    kube_server.run_kubectl("apply", "-f", "-", input=widget(namespace, "ok", {"size": 3, "color": "red"}))
    got = json.loads(kube_server.run_kubectl("get", "widget", "ok", "-n", namespace, "-o", "json").stdout)
    assert got["spec"] == {"size": 3, "color": "red"}

    too_small = kube_server.run_kubectl("apply", "-f", "-", input=widget(namespace, "zero", {"size": 0}), check=False)
    assert too_small.returncode != 0
    assert "spec.size" in too_small.stderr and "should be greater than or equal to 1" in too_small.stderr

    missing = kube_server.run_kubectl("apply", "-f", "-", input=widget(namespace, "none", {"color": "blue"}), check=False)
    assert missing.returncode != 0 and "spec.size: Required value" in missing.stderr

    too_big = kube_server.run_kubectl("apply", "-f", "-", input=widget(namespace, "big", {"size": 11}), check=False)
    assert too_big.returncode != 0 and "size must be at most 10" in too_big.stderr

    names = kube_server.run_kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["widget.example.io/ok"]


def test_pods_are_admitted_without_service_accounts(kube_server: localinfra.KubeApiServer, namespace: str) -> None:
    # No controller-manager creates the `default` ServiceAccount; its admission plugin is off.
    kube_server.run_kubectl("run", "p", "-n", namespace, "--image=example.invalid/none:1", "--restart=Never")
    phase = kube_server.run_kubectl("get", "pod", "p", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Pending"  # and stays so: there is no scheduler


def test_rbac_with_impersonation_and_service_account_tokens(kube_server: localinfra.KubeApiServer, namespace: str, tmp_path: Path) -> None:
    nobody = f"system:serviceaccount:{namespace}:nobody"
    can_i = kube_server.run_kubectl("auth", "can-i", "create", "pods", "-n", namespace, as_user=nobody, check=False)
    assert (can_i.returncode, can_i.stdout.strip()) == (1, "no")
    assert kube_server.run_kubectl("auth", "can-i", "create", "pods", "-n", namespace).stdout.strip() == "yes"

    # A real ServiceAccount token, as an operator in a pod would use it.
    kube_server.run_kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps")
    kube_server.run_kubectl("create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader", f"--serviceaccount={namespace}:reader")
    token = kube_server.service_account_token(namespace, "reader")
    config = kube_server.write_kubeconfig(tmp_path / "reader.kubeconfig", token=token, namespace=namespace)

    def reader_can(*args: str) -> str:
        return kube_server.run_kubectl("auth", "can-i", *args, kubeconfig=config, check=False).stdout.strip()

    assert reader_can("list", "configmaps") == "yes"
    assert reader_can("create", "pods") == "no"
    assert reader_can("list", "configmaps", "-n", "default") == "no"
    whoami = json.loads(kube_server.run_kubectl("auth", "whoami", "-o", "json", kubeconfig=config).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"


def test_kuberay_crd_installs_server_side_and_validates(kube_server: localinfra.KubeApiServer, namespace: str) -> None:
    # ~1 MB of schema: client-side apply would overflow the last-applied annotation.
    kube_server.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(localinfra.kuberay_crds() / "ray.io_rayclusters.yaml"))
    kube_server.wait_crd_established("rayclusters.ray.io")

    def raycluster(spec: dict[str, object]) -> str:
        return json.dumps({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc", "namespace": namespace}, "spec": spec})

    head = {"rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.9.0"}]}}}
    kube_server.run_kubectl("apply", "--dry-run=server", "-f", "-", input=raycluster({"headGroupSpec": head}))
    bad = kube_server.run_kubectl("apply", "--dry-run=server", "-f", "-", input=raycluster({}), check=False)
    assert bad.returncode != 0 and "spec.headGroupSpec: Required value" in bad.stderr
