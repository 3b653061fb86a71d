"""Real Kafka, S3 and Kubernetes API servers on 127.0.0.1 for the vlgenrm test suite.

Installs (from Maven Central and the Go module proxy only), starts, stops and
restarts these servers:

* Apache Kafka in KRaft mode, one node acting as broker and controller;
* versitygw, an Apache-2.0 S3 gateway, on a plain directory;
* etcd, one member;
* kube-apiserver on that etcd, plus kubectl: a control plane without controllers, as
  controller-runtime's envtest runs it (RBAC, static bearer tokens, a test CA).

and builds the Helm client the chart tests run (a tool: installed, never started).

Builds are cached under ``INFRA_HOME``; runtime data, pid files, logs, ports and
credentials live under a state directory, so a server started by one process
(``make``) can be stopped or restarted by another (``pytest``).

Stdlib only, so it runs before any virtualenv exists; ``scripts/infra`` goes on ``sys.path``
(pytest's ``pythonpath``, the Makefile's ``PYTHONPATH``). Usage::

    python -m localinfra up            # install if needed, start, write connection files
    python -m localinfra down kafka    # stop one server, keep its data
    python -m localinfra up kube       # etcd + kube-apiserver; writes .infra/kubeconfig
    python -m localinfra --help

One module per server (kafka, s3, etcd, kube; helm is a tool), their abstract base in
``server``, shared helpers in ``common``, the CLI in ``cli``; this package exports the
public API that tests and make use.
"""

from localinfra.common import INFRA_HOME, KUBE_VERSION, REPO_ROOT, InfraError
from localinfra.connection import read_connection_file, write_connection_file
from localinfra.etcd import EtcdServer
from localinfra.helm import Helm
from localinfra.kafka import KafkaServer
from localinfra.kube import KubeApiServer
from localinfra.kuberay import KUBERAY_VERSION, kuberay_crds
from localinfra.s3 import S3Server, s3_request
from localinfra.server import CachedInstall, Server

__all__ = [
    "INFRA_HOME",
    "KUBERAY_VERSION",
    "KUBE_VERSION",
    "REPO_ROOT",
    "CachedInstall",
    "EtcdServer",
    "Helm",
    "InfraError",
    "KafkaServer",
    "KubeApiServer",
    "S3Server",
    "Server",
    "kuberay_crds",
    "read_connection_file",
    "s3_request",
    "write_connection_file",
]
