"""Typed settings: defaults < config file (YAML) < environment (VLGENRM_*) < CLI overrides.

Environment variables use ``__`` between levels: ``VLGENRM_BUS__BOOTSTRAP_SERVERS=host:9092``.
The config file is ``--config FILE`` or ``VLGENRM_CONFIG``; CLI overrides are
``--set bus.kind=kafka`` (values parsed as YAML scalars).
"""

from __future__ import annotations

import contextvars
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from vlgenrm.errors import ConfigError
from vlgenrm.retry import Backoff
from vlgenrm.scoring.config import ServingConfig


class BusKind(StrEnum):
    MEMORY = "memory"
    KAFKA = "kafka"


class StoreKind(StrEnum):
    LOCAL = "local"
    S3 = "s3"


class BusSettings(BaseModel):
    """Where messages travel: the in-process MemoryBus or a Kafka cluster."""

    kind: BusKind = Field(BusKind.MEMORY, description="memory (embedded, one process) or kafka.")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka brokers, comma separated.")
    topic_prefix: str = Field("vlgenrm", description="Prefix of every topic name (vlgenrm.tasks.experts, ...).")
    partitions: int = Field(4, ge=1, description="Partitions of topics this system creates.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics this system creates.")
    client_id: str = Field("vlgenrm", description="Kafka client id, shown in broker logs and metrics.")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(None, description="PLAIN or SCRAM-SHA-256/512 when SASL is used.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    connect_timeout_s: float = Field(10.0, gt=0, description="How long to wait for a broker to answer at start-up.")
    request_timeout_s: float = Field(15.0, gt=0, description="Timeout of one broker request.")
    publish_timeout_s: float = Field(30.0, gt=0, description="How long one publish may take before it is retried.")
    session_timeout_s: float = Field(10.0, gt=0, description="A consumer silent this long loses its partitions.")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="Consumer heartbeat period (< session timeout / 3).")
    max_poll_interval_s: float = Field(600.0, gt=0, description="Longest time one message may be processed.")
    publish_retry: Backoff = Field(default_factory=lambda: Backoff(max_attempts=6, initial_s=0.5, max_s=8.0))


class StoreSettings(BaseModel):
    """Where data, checkpoints and reports live: a local folder or an S3 bucket."""

    kind: StoreKind = Field(StoreKind.LOCAL, description="local (a folder) or s3 (any S3 API: MinIO, AWS, ...).")
    root: Path = Field(Path("~/.local/share/vlgenrm/store"), description="Folder of the local store.")
    endpoint: str = Field("127.0.0.1:9000", description="S3 endpoint host:port.")
    bucket: str = Field("vlgenrm", description="Bucket holding everything this system writes.")
    access_key: str = Field("", description="S3 access key.")
    secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    secure: bool = Field(False, description="Use HTTPS towards the S3 endpoint.")
    region: str = Field("us-east-1", description="S3 region (signature scope).")
    create_bucket: bool = Field(True, description="Create the bucket when it is missing.")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect timeout towards S3.")
    read_timeout_s: float = Field(60.0, gt=0, description="Socket read timeout towards S3.")
    part_size_mb: int = Field(16, ge=5, le=5120, description="Multipart part size; bounds memory per upload.")
    retry: Backoff = Field(default_factory=lambda: Backoff(max_attempts=4, initial_s=0.5, max_s=4.0))

    def portable(self) -> dict[str, Any]:
        """As JSON with the secret in clear: for processes that open the store themselves
        (Ray Train workers, Serve replicas), which receive their settings as arguments."""
        data = self.model_dump(mode="json")
        data["secret_key"] = self.secret_key.get_secret_value()
        return data


class WorkerSettings(BaseModel):
    """How stage services consume their task topics."""

    poll_timeout_s: float = Field(1.0, gt=0, description="Longest wait for new messages before checking for stop.")
    max_records: int = Field(10, ge=1, description="Messages fetched per poll.")
    retry: Backoff = Field(
        default_factory=lambda: Backoff(max_attempts=5, initial_s=1.0, max_s=30.0),
        description="Retries of a message whose handler hit a transient error, before it is dead-lettered.",
    )


class RaySettings(BaseModel):
    """Which Ray cluster the trainer (and the scorer) use: an existing one, or a local one."""

    address: str | None = Field(None, description="ray://host:10001 or host:6379 of a running cluster; None = RAY_ADDRESS, else start a local one.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster (None = all of this machine's).")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local cluster (None = detect).")
    object_store_memory_mb: int = Field(256, ge=64, description="Object store of a local cluster; the trainer moves little through it.")
    include_dashboard: bool = Field(False, description="Start the Ray dashboard with a local cluster.")
    log_to_driver: bool = Field(
        True,
        description="Forward Ray workers' output to this process; off also limits Ray's own driver logs to errors (vlgenrm run turns it off unless --verbose).",
    )
    connect_retry: Backoff = Field(
        default_factory=lambda: Backoff(max_attempts=5, initial_s=2.0, max_s=30.0),
        description="Retries of connecting to an existing cluster (a KubeRay head restarting, Ray Client's server starting).",
    )


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("vlgenrm_config_file", default=None)


class Settings(BaseSettings):
    """All settings of a vlgenrm process."""

    model_config = SettingsConfigDict(env_prefix="VLGENRM_", env_nested_delimiter="__", extra="forbid")

    namespace: str = Field("default", description="Namespace of Iterations handled by this process.")
    log_level: str = Field("INFO", description="Python logging level.")
    bus: BusSettings = Field(default_factory=BusSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    serving: ServingConfig = Field(default_factory=ServingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["bus.kind=kafka", "store.part_size_mb=32"]`` -> nested dict with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. bus.kind=kafka)")
        node = out
        *parents, leaf = path.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return out


def load_settings(config_file: Path | str | None = None, overrides: list[str] | None = None) -> Settings:
    """Build Settings from the file (``config_file`` or $VLGENRM_CONFIG), env and overrides."""
    path = config_file or os.environ.get("VLGENRM_CONFIG")
    path = Path(path).expanduser() if path else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    token = _config_file.set(path)
    try:
        return Settings(**parse_overrides(overrides or []))
    finally:
        _config_file.reset(token)
