"""``python -m localinfra up|down|status|restart|install [target]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from localinfra.common import DEFAULT_STATE_DIR, ETCD_VERSION, HELM_VERSION, INFRA_HOME, KAFKA_VERSION, KUBE_VERSION, VERSITYGW_VERSION, InfraError
from localinfra.connection import write_connection_file
from localinfra.etcd import EtcdServer
from localinfra.helm import Helm
from localinfra.kafka import KafkaServer
from localinfra.kube import KubeApiServer
from localinfra.s3 import S3Server
from localinfra.server import CachedInstall, Server


def _servers(target: str, state_dir: Path, infra_home: Path) -> list[Server]:
    all_servers: dict[str, Server] = {
        "kafka": KafkaServer(state_dir, infra_home),
        "s3": S3Server(state_dir, infra_home),
        "etcd": EtcdServer(state_dir, infra_home),
        "kube": KubeApiServer(state_dir, infra_home),  # needs etcd: starts it first, stops it too
    }
    if target == "helm":
        return []  # a tool: installed by install/up, nothing to start or stop
    return list(all_servers.values()) if target == "all" else [all_servers[target]]


def _install_note(server: CachedInstall) -> tuple[bool, float]:
    cached = server.is_installed()
    return cached, server.install()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localinfra",
        description=(
            f"Run real test servers on 127.0.0.1: Kafka {KAFKA_VERSION} (KRaft, single node, from Maven "
            f"Central), versitygw {VERSITYGW_VERSION} (S3, built with `go install`), etcd {ETCD_VERSION} and "
            f"kube-apiserver {KUBE_VERSION} + kubectl (built with `go build` from the Go module proxy; "
            f"`kube` starts etcd first and stops it too), and the Helm {HELM_VERSION} client (`go install`). Builds are cached in "
            "$VLGENRM_INFRA_HOME (default ~/.cache/vlgenrm/infra); data, logs, pid files, ports and "
            "connection files live in $VLGENRM_INFRA_STATE (default <repo>/.infra)."
        ),
        epilog=(
            "commands: install = build into the cache only; up = install if needed, start, write "
            "connection.json/connection.env; down = stop (data kept); restart = down + up; status = "
            "print state (exit 3 if a selected server is not running). Ports are chosen once and "
            "reused, so addresses survive restarts. Remove the state dir to start from scratch."
        ),
    )
    parser.add_argument("command", choices=["install", "up", "down", "status", "restart"])
    parser.add_argument("target", nargs="?", default="all", choices=["kafka", "s3", "etcd", "kube", "helm", "all"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s")
    parser.add_argument("--infra-home", type=Path, default=INFRA_HOME, help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=120, help="start timeout per server, seconds")
    args = parser.parse_args(argv)

    servers = _servers(args.target, args.state_dir, args.infra_home)
    rc = 0
    try:
        if args.command in ("install", "up") and args.target in ("all", "helm"):
            helm = Helm(args.infra_home)  # a client the chart tests run: built with the servers, never started
            cached, secs = _install_note(helm)
            print(f"helm: install {secs:.1f}s{' (cached)' if cached else ''}, {helm.binary}")
        if args.command == "install":
            for srv in servers:
                cached, secs = _install_note(srv)
                print(f"{srv.name}: install {secs:.1f}s{' (cached)' if cached else ''}, {srv.install_dir}")
        elif args.command in ("up", "restart"):
            for srv in servers:
                cached, install_secs = _install_note(srv)
                stop_note = ""
                if args.command == "restart":
                    t0 = time.monotonic()
                    srv.stop()
                    stop_note = f"stop {time.monotonic() - t0:.1f}s, "
                already = srv.pid() is not None
                start_secs = srv.start(timeout=args.timeout)
                print(
                    f"{srv.name}: install {install_secs:.1f}s{' (cached)' if cached else ''}, {stop_note}"
                    f"start {start_secs:.1f}s{' (already running)' if already else ''}, {srv.address}"
                )
            conn = write_connection_file(
                args.state_dir,
                KafkaServer(args.state_dir, args.infra_home),
                S3Server(args.state_dir, args.infra_home),
                KubeApiServer(args.state_dir, args.infra_home),
            )
            print(f"connection: {conn} (+ connection.env)")
        elif args.command == "down":
            for srv in reversed(servers):  # kube before the etcd it stores into
                pid = srv.pid()
                etcd_pid = srv.etcd.pid() if isinstance(srv, KubeApiServer) else None
                srv.stop()
                print(f"{srv.name}: " + (f"stopped (pid {pid})" if pid else "not running") + (f", its etcd too (pid {etcd_pid})" if etcd_pid else ""))
        elif args.command == "status":
            for srv in servers:
                pid = srv.pid()
                up = pid is not None and srv.probe()
                if not up:
                    rc = 3
                state = "running" if up else ("starting/unresponsive" if pid else "stopped")
                address = srv.address if srv.state_file.exists() else "no port assigned yet"
                print(
                    f"{srv.name}: {state}" + (f" pid {pid}" if pid else "") + f", {address}, "
                    f"installed={'yes' if srv.is_installed() else 'no'}, log {srv.log_file}"
                )
    except InfraError as exc:
        print(f"localinfra: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc
