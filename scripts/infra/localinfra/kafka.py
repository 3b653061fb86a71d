"""Apache Kafka in KRaft mode (one node, broker and controller), resolved from Maven Central, and
a readiness probe that speaks the Kafka wire protocol."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import uuid
from pathlib import Path
from typing import Any

from localinfra.common import KAFKA_VERSION, LOG4J_VERSION, SCALA_VERSION, InfraError, pick_free_port, run_logged, write_atomic
from localinfra.server import Server

_KAFKA_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom: only used to let Maven resolve Kafka's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>vlgenrm.localinfra</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- Not transitive: without a binding SLF4J drops every broker log line. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
      <scope>runtime</scope>
    </dependency>
  </dependencies>
</project>
"""

# Console appender: the process's stdout is redirected into <state>/kafka.log, so
# JVM crash output and log4j output end up in one file.
_KAFKA_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# The chattiest INFO sources: full config dumps and per-partition/segment chatter.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaServer(Server):
    """Single-node Kafka in KRaft mode (broker + controller in one JVM)."""

    name = "kafka"
    version = KAFKA_VERSION

    @property
    def libs_dir(self) -> Path:
        return self.install_dir / "libs"

    @property
    def bootstrap_servers(self) -> str:
        return self.address

    @property
    def _config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _log_dir(self) -> Path:
        return self.data_dir / "data"

    def is_installed(self) -> bool:
        return (self.libs_dir / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").is_file()

    def _build(self, tmp: Path, log: Path) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError("kafka: 'mvn' not found on PATH (Kafka is installed from Maven Central)")
        (tmp / "pom.xml").write_text(_KAFKA_POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        run_logged(
            [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory=libs"],
            cwd=tmp,
            env=dict(os.environ),
            log=log,
            what="kafka: mvn dependency:copy-dependencies",
        )

    def _initial_state(self) -> dict[str, Any]:
        port = pick_free_port()
        return {"port": port, "controller_port": pick_free_port((port,))}

    def _ports(self) -> list[int]:
        state = self._state()
        return [int(state["port"]), int(state["controller_port"])]

    def _marker(self) -> str:
        return str(self._config_file)

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise InfraError("kafka: 'java' (17+) not found; set JAVA_HOME or put java on PATH")
        return java

    def _server_properties(self) -> str:
        port, cport = self._ports()
        return "\n".join(
            [
                "# Written by localinfra (scripts/infra) on every start; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                # Static quorum: needs no --standalone/--initial-controllers at format time and
                # keeps working when restarted with the same data.
                f"controller.quorum.voters=1@127.0.0.1:{cport}",
                "controller.listener.names=CONTROLLER",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self._log_dir}",
                # One node: every internal topic must fit on it.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "share.coordinator.state.topic.num.partitions=4",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "num.partitions=4",
                "auto.create.topics.enable=true",
                # Tests create consumer groups all the time; the default 3 s delay is pure waiting.
                "group.initial.rebalance.delay.ms=0",
                # After a crash (kill()) the restarted broker's registration waits until the
                # controller expires the dead incarnation's session: 9 s by default. Shorter, but
                # with headroom for GC/CPU stalls on a busy 2-core CI machine.
                "broker.heartbeat.interval.ms=1000",
                "broker.session.timeout.ms=4500",
                # The cleaner (needed for compacted __consumer_offsets) defaults to a 128 MiB
                # buffer, a quarter of our 512 MiB heap.
                "log.cleaner.dedupe.buffer.size=33554432",
                "",
            ]
        )

    def _prepare(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self._config_file, self._server_properties())
        write_atomic(self.data_dir / "log4j2.properties", _KAFKA_LOG4J2)
        if (self._log_dir / "meta.properties").exists():
            return  # formatted before: keep the cluster id and all data
        # Kafka's cluster ids are url-safe base64 UUIDs; Kafka itself re-rolls ids
        # starting with '-' since they look like CLI options.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        run_logged(
            [
                self._java(),
                "-Xmx256m",
                *self._log_opts(),
                "-cp",
                f"{self.libs_dir}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self._config_file),
            ],
            cwd=self.data_dir,
            env=dict(os.environ),
            log=self.log_file,
            what="kafka: StorageTool format",
        )

    def _log_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}"]

    def _command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            self._java(),
            "-Xmx512m",
            "-Xms128m",
            # Kafka's own launcher defaults: short GC pauses keep client timeouts quiet.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *self._log_opts(),
            "-cp",
            f"{self.libs_dir}/*",
            "kafka.Kafka",
            str(self._config_file),
        ]
        return cmd, dict(os.environ)

    def probe(self) -> bool:
        try:
            return _kafka_broker_ready(self._ports()[0])
        except (OSError, struct.error, ValueError):
            return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def _kafka_call(sock: socket.socket, api_key: int, version: int, body: bytes, corr: int) -> bytes:
    client_id = b"localinfra"
    msg = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    if struct.unpack_from(">i", resp)[0] != corr:
        raise ValueError("correlation id mismatch")
    return resp[4:]


def _kafka_broker_ready(port: int, timeout: float = 2.0) -> bool:
    """Ask the broker for cluster metadata over the wire protocol.

    An open port is not enough: Kafka binds its listener early but only serves
    requests once the broker has registered with the controller, and only lists
    itself in Metadata once it is unfenced, i.e. can host partitions. That is the
    moment topic auto-creation starts to work.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # ApiVersions v0 works on every Kafka; use it to pick a Metadata version we can encode.
        resp = _kafka_call(sock, 18, 0, b"", 1)
        (error,) = struct.unpack_from(">h", resp)
        if error:
            return False
        (count,) = struct.unpack_from(">i", resp, 2)
        entries = (struct.unpack_from(">hhh", resp, 6 + 6 * i) for i in range(count))
        versions = {key: (lo, hi) for key, lo, hi in entries}
        lo, hi = versions.get(3, (0, -1))
        version = max(lo, 1)
        if version > min(hi, 8):  # only the flexible (v9+) encoding left: ApiVersions answered, good enough
            return True
        body = struct.pack(">i", 0)  # empty topic list (v1+): brokers only
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation
        if version >= 8:
            body += b"\x00\x00"  # include cluster / topic authorized operations
        resp = _kafka_call(sock, 3, version, body, 2)
        offset = 4 if version >= 3 else 0  # throttle_time_ms
        (brokers,) = struct.unpack_from(">i", resp, offset)
        return int(brokers) > 0
