"""kube-apiserver on etcd, plus kubectl: a control plane without controllers, as envtest runs it
(RBAC, static bearer tokens, a test CA, kubeconfigs, a kubectl helper)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from localinfra.common import (
    DEFAULT_STATE_DIR,
    INFRA_HOME,
    KUBE_ADMIN_USER,
    KUBE_MODULE,
    KUBE_SERVICE_CIDR,
    KUBE_SERVICE_IP,
    KUBE_TEST_USER,
    KUBE_VERSION,
    InfraError,
    http_get,
    pick_free_port,
    run_logged,
    write_atomic,
)
from localinfra.etcd import EtcdServer
from localinfra.golang import go_binary, go_env, go_line
from localinfra.server import Server


class KubeApiServer(Server):
    """kube-apiserver on etcd: a Kubernetes control plane without controllers (envtest-style).

    ``start()`` starts :class:`EtcdServer` first; ``stop()`` stops both. Authentication is by
    static bearer tokens (an admin in ``system:masters`` and a plain user without any RBAC
    grants), authorisation is RBAC. There is no controller-manager and no scheduler: no
    ``default`` ServiceAccounts or token Secrets appear by themselves (the TokenRequest API
    works: :meth:`service_account_token`), no garbage collection, namespaces never finish
    deleting, pods stay Pending. Tests create fresh namespaces instead of cleaning up.
    """

    name = "kube"
    version = KUBE_VERSION
    admin_name = KUBE_ADMIN_USER  # group system:masters
    user_name = KUBE_TEST_USER  # no groups, no RBAC grants

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, infra_home: Path = INFRA_HOME) -> None:
        super().__init__(state_dir, infra_home)
        self.etcd = EtcdServer(state_dir, infra_home)

    # -- install ---------------------------------------------------------------

    @property
    def install_dir(self) -> Path:
        return self.infra_home / f"kubernetes-{self.version}"

    @property
    def apiserver_binary(self) -> Path:
        return self.install_dir / "bin" / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        """The kubectl built from the same Kubernetes release."""
        return self.install_dir / "bin" / "kubectl"

    def is_installed(self) -> bool:
        return os.access(self.apiserver_binary, os.X_OK) and os.access(self.kubectl, os.X_OK)

    def install(self) -> float:
        """Install etcd and Kubernetes (kube-apiserver + kubectl) into the cache if missing."""
        return self.etcd.install() + super().install()

    def _build(self, tmp: Path, log: Path) -> None:
        # k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/apiserver, …)
        # with ./staging/src paths, so neither `go install` nor a plain `require` resolves
        # them. A wrapper module requires k8s.io/kubernetes and points every staging module
        # at its published release, v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
        go = go_binary("kube")
        src = tmp / "src"
        src.mkdir()
        env = go_env()
        with log.open("ab") as fh:
            fh.write(f"$ go mod download -json {KUBE_MODULE}@{KUBE_VERSION}\n".encode())
        proc = subprocess.run(
            [go, "mod", "download", "-json", f"{KUBE_MODULE}@{KUBE_VERSION}"], cwd=src, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        with log.open("a") as fh:
            fh.write(proc.stderr)
        try:
            info = json.loads(proc.stdout)
            upstream = Path(info["GoMod"]).read_text()
        except (ValueError, KeyError, OSError) as exc:
            raise InfraError(
                f"kube: go mod download {KUBE_MODULE}@{KUBE_VERSION} failed ({exc}): {proc.stdout.strip()[-2000:]} {proc.stderr.strip()[-2000:]}"
            ) from exc
        staging = sorted({m.group(1) for m in re.finditer(r"^\s*(?:replace\s+)?(\S+)\s*=>\s*\./staging/src/\S+\s*$", upstream, re.M)})
        if not staging:
            raise InfraError(f"kube: no staging replaces found in {info['GoMod']}")
        staging_version = "v0." + KUBE_VERSION.split(".", 1)[1]
        godebug = [line for line in upstream.splitlines() if line.startswith("godebug ")]
        lines = [
            "module localinfra.invalid/kubernetes",
            "",
            f"go {go_line(upstream)}",
            "",
            *godebug,
            f"require {KUBE_MODULE} {KUBE_VERSION}",
            "",
            "replace (",
            *(f"\t{mod} => {mod} {staging_version}" for mod in staging),
            ")",
            "",
        ]
        (src / "go.mod").write_text("\n".join(lines))
        pkgs = [f"{KUBE_MODULE}/cmd/kube-apiserver", f"{KUBE_MODULE}/cmd/kubectl"]
        run_logged([go, "get", *(f"{pkg}@{KUBE_VERSION}" for pkg in pkgs)], cwd=src, env=env, log=log, what=f"kube: go get {KUBE_MODULE}@{KUBE_VERSION}")
        # What Kubernetes' own build stamps in (hack/lib/version.sh), so `kubectl version`
        # and /version report the release instead of v0.0.0-master.
        major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
        stamps = [
            f"-X {pkg}.{key}={value}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in (("gitVersion", KUBE_VERSION), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))
        ]
        (tmp / "bin").mkdir()
        run_logged(
            [go, "build", "-trimpath", f"-ldflags=-s -w {' '.join(stamps)}", "-o", str(tmp / "bin") + "/", *pkgs],
            cwd=src,
            env=env,
            log=log,
            what="kube: go build kube-apiserver kubectl",
        )
        shutil.rmtree(src)

    # -- state, credentials, PKI ---------------------------------------------------

    def _initial_state(self) -> dict[str, Any]:
        return {"port": pick_free_port(), "admin_token": secrets.token_hex(24), "user_token": secrets.token_hex(24)}

    def _ports(self) -> list[int]:
        return [int(self._state()["port"])]

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def admin_token(self) -> str:
        """Bearer token of ``vlgenrm-admin`` (group ``system:masters``: everything, impersonation too)."""
        return str(self._state()["admin_token"])

    @property
    def user_token(self) -> str:
        """Bearer token of :attr:`user_name`, a user with no RBAC grants at all."""
        return str(self._state()["user_token"])

    @property
    def _pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the serving certificate (kubeconfigs embed it)."""
        return self._pki_dir / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig, (re)written on every start: ``KUBECONFIG=<this> kubectl …``."""
        return self.state_dir / "kubeconfig"

    @property
    def _token_file(self) -> Path:
        return self.data_dir / "tokens.csv"

    def _marker(self) -> str:
        return str(self._token_file)

    def _make_pki(self) -> None:
        """CA, serving cert (127.0.0.1 + the in-cluster names) and service-account key, once."""
        if (self._pki_dir / "sa.key").is_file():
            return
        openssl = shutil.which("openssl")
        if openssl is None:
            raise InfraError("kube: 'openssl' not found on PATH (it makes the test CA and keys)")
        self._pki_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pki-", dir=self._pki_dir.parent))
        try:
            # Own config: nothing depends on the system's openssl.cnf.
            (tmp / "req.cnf").write_text(
                "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
                "[dn]\nCN = vlgenrm-test-ca\n"
                "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
                "subjectKeyIdentifier = hash\n"
            )
            sans = [
                "IP:127.0.0.1",
                f"IP:{KUBE_SERVICE_IP}",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
            (tmp / "serving.ext").write_text(
                "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
                f"subjectAltName = {','.join(sans)}\n"
            )
            log, env = self.log_file, dict(os.environ)
            days = "3650"
            for cmd in (
                [openssl, "req", "-x509", "-config", "req.cnf", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", days],
                [
                    openssl,
                    "req",
                    "-new",
                    "-config",
                    "req.cnf",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "serving.key",
                    "-out",
                    "serving.csr",
                    "-subj",
                    "/CN=kube-apiserver",
                ],
                [
                    openssl,
                    "x509",
                    "-req",
                    "-in",
                    "serving.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "serving.crt",
                    "-days",
                    days,
                    "-extfile",
                    "serving.ext",
                ],
                [openssl, "genrsa", "-out", "sa.key", "2048"],
            ):
                run_logged(cmd, cwd=tmp, env=env, log=log, what=f"kube: openssl {cmd[1]}")
            tmp.chmod(0o700)
            shutil.rmtree(self._pki_dir, ignore_errors=True)  # an incomplete one from an older layout
            os.rename(tmp, self._pki_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def write_kubeconfig(
        self, path: Path | None = None, *, token: str | None = None, namespace: str | None = None, as_user: str | None = None, as_groups: tuple[str, ...] = ()
    ) -> Path:
        """Write a kubeconfig for this server (default: the admin one at :attr:`kubeconfig`).

        ``token`` authenticates as someone else (e.g. :meth:`service_account_token`);
        ``as_user``/``as_groups`` make kubectl and client-go impersonate (as the admin).
        """
        path = Path(path) if path is not None else self.kubeconfig
        user: dict[str, Any] = {"token": token or self.admin_token}
        if as_user:
            user["as"] = as_user
        if as_groups:
            user["as-groups"] = list(as_groups)
        context: dict[str, Any] = {"cluster": "vlgenrm", "user": "vlgenrm"}
        if namespace:
            context["namespace"] = namespace
        config = {  # JSON is YAML: every kubeconfig reader takes it
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "vlgenrm",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": "vlgenrm", "user": user}],
            "contexts": [{"name": "vlgenrm", "context": context}],
            "current-context": "vlgenrm",
        }
        write_atomic(path, json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def _prepare(self) -> None:
        self._make_pki()
        # token,user,uid,"group1,group2" (read once at start by the apiserver)
        write_atomic(
            self._token_file,
            (f'{self.admin_token},{KUBE_ADMIN_USER},{KUBE_ADMIN_USER},"system:masters"\n{self.user_token},{KUBE_TEST_USER},{KUBE_TEST_USER}\n'),
        )
        self._token_file.chmod(0o600)
        self.write_kubeconfig()

    def _command(self) -> tuple[list[str], dict[str, str]]:
        pki = self._pki_dir
        cmd = [
            str(self.apiserver_binary),
            f"--etcd-servers={self.etcd.client_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self._ports()[0]}",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.data_dir / 'certs'}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={self._token_file}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={KUBE_SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true",
            # No controller-manager creates the `default` service accounts this plugin insists on.
            "--disable-admission-plugins=ServiceAccount",
            # Nothing listens on 127.0.0.1 from inside a pod anyway: no endpoints for `kubernetes`.
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]
        return cmd, dict(os.environ)

    def api_get(self, path: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` (e.g. ``/readyz``, ``/api/v1/namespaces``) with ``token`` (default: the
        admin's), TLS verified against the test CA; returns (status, body) for any status."""
        return http_get(f"{self.url}{path}", token=token or self.admin_token, cafile=self.ca_file, timeout=timeout)

    def probe(self) -> bool:
        try:
            status, _ = self.api_get("/readyz", timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    # -- life cycle: etcd first ---------------------------------------------------

    def start(self, timeout: float = 120) -> float:
        """Start (or reuse) etcd, then kube-apiserver; returns seconds until /readyz said 200."""
        t0 = time.monotonic()
        self.etcd.start(timeout=timeout)
        super().start(timeout=max(5.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def stop(self, timeout: float = 30) -> None:
        """Stop kube-apiserver, then its etcd (data stays: CRDs and objects survive a restart)."""
        super().stop(timeout)
        self.etcd.stop(timeout)

    # -- kubectl ------------------------------------------------------------------

    def kubectl_args(self, *args: str, as_user: str | None = None, as_groups: tuple[str, ...] = (), kubeconfig: Path | None = None) -> list[str]:
        """A kubectl command line against this server: as the admin, unless ``kubeconfig`` says
        otherwise (see :meth:`write_kubeconfig`); ``as_user``/``as_groups`` impersonate."""
        cmd = [
            str(self.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # Discovery cache in the state dir, not ~/.kube (servers come and go on one port).
            f"--cache-dir={self.data_dir / 'kubectl-cache'}",
        ]
        if as_user:
            cmd.append(f"--as={as_user}")
        cmd += [f"--as-group={group}" for group in as_groups]
        return cmd + list(args)

    def run_kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        as_user: str | None = None,
        as_groups: tuple[str, ...] = (),
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (arguments as for :meth:`kubectl_args`); with ``check`` a non-zero exit
        raises InfraError carrying stderr."""
        cmd = self.kubectl_args(*args, as_user=as_user, as_groups=as_groups, kubeconfig=kubeconfig)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise InfraError(f"kubectl {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def wait_crd_established(self, name: str, timeout: float = 60) -> None:
        """Poll until CustomResourceDefinition ``name`` is Established (its kind is then served).

        ``kubectl wait --for=condition=Established`` errors out instead of waiting when it
        looks before the apiserver has written the first conditions.
        """
        deadline = time.monotonic() + timeout
        while True:
            proc = self.run_kubectl("get", "crd", name, "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False)
            if proc.returncode == 0 and proc.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise InfraError(f"CRD {name} not Established after {timeout:.0f}s: {proc.stdout.strip()} {proc.stderr.strip()}")
            time.sleep(0.2)

    def service_account_token(self, namespace: str, name: str, duration: str = "1h") -> str:
        """A real token of ServiceAccount ``namespace/name`` (TokenRequest API), creating the account if missing.

        Lets a test authenticate as an operator would in a pod, e.g. via
        ``write_kubeconfig(path, token=...)``; its permissions are whatever RBAC grants.
        """
        sa = json.dumps({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})
        self.run_kubectl("apply", "-f", "-", input=sa)
        return self.run_kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()
