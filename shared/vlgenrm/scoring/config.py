"""Typed serving config: replicas and batching, the model to serve, safety limits."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlgenrm.genrm.config import GenRMSettings


class Scope(StrEnum):
    """What a key may call: one scope per kind of endpoint."""

    SCORE = "score"  # POST /v1/score (and GET /v1/models)
    COMPARE = "compare"  # POST /v1/compare
    REWARD = "reward"  # POST /get_reward (OpenRLHF's protocol)


class ApiKey(BaseModel):
    """One client's key, stored as its SHA-256 (the clear key is never configured)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Who holds the key; shown in logs and metrics.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key (vlgenrm serve --hash-key KEY prints it).")
    scopes: list[Scope] = Field(default_factory=lambda: list(Scope), description="Endpoints the key may call: score, compare, reward.")
    rate_per_s: float | None = Field(None, gt=0, description="Sustained requests per second (None = the default rate).")
    burst: int | None = Field(None, ge=1, description="Requests allowed at once above the rate (None = the default burst).")


class SecuritySettings(BaseModel):
    """Who may call, how often, with how much, and which images may be fetched."""

    model_config = ConfigDict(extra="forbid")
    require_api_key: bool = Field(True, description="Reject calls without a known key (401); false only on a trusted network.")
    api_keys: list[ApiKey] = Field(default_factory=list, description="Keys (hashed) from config.")
    api_keys_file: Path | None = Field(None, description="YAML list of ApiKey, e.g. a mounted Secret; read at start and on reconfigure.")
    rate_per_s: float = Field(20.0, gt=0, description="Default sustained requests per second per key.")
    burst: int = Field(40, ge=1, description="Default burst per key.")
    max_request_bytes: int = Field(16 << 20, ge=1024, description="Larger request bodies get 413.")
    max_image_bytes: int = Field(10 << 20, ge=1024, description="Larger images (decoded base64 or fetched) get 413.")
    image_fetch_timeout_s: float = Field(5.0, gt=0, description="Whole-fetch limit for an http(s) image (504 when exceeded).")
    allowed_hosts: list[str] = Field(default_factory=list, description="Hosts http(s) images may come from ('*.example.com' matches subdomains); empty = none.")
    allowed_buckets: list[str] | None = Field(None, description="Buckets s3:// images may come from (None = only the platform store's bucket).")


class ServingConfig(BaseModel):
    """How the scorer runs (an Iteration's promoted model, or a fixed checkpoint)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="Checkpoint to serve (folder or store URI); None = the promoted model of `namespace`.")
    host: str = Field("0.0.0.0", description="Address the HTTP proxy listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP proxy listens on.")
    namespace: str = Field("default", description="Whose promotion pointer (models/<namespace>/promoted.json) to follow.")
    watch_promoted_s: float | None = Field(30.0, gt=0, description="Poll the promotion pointer this often and hot-swap on change (None = never).")
    genrm: GenRMSettings = Field(default_factory=GenRMSettings, description="Device, dtype and limits of the GenRM.")
    min_replicas: int = Field(1, ge=0, description="Fewest model replicas (autoscaling floor).")
    max_replicas: int = Field(1, ge=1, description="Most model replicas (autoscaling ceiling).")
    target_ongoing_requests: float = Field(16, gt=0, description="Autoscaling target of in-flight requests per replica.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a replica accepts at once; more queue at the proxy.")
    max_batch_size: int = Field(16, ge=1, description="Items (responses or pairs) per batched forward pass.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a batch waits to fill before running.")
    num_cpus: float = Field(1, ge=0, description="CPUs per model replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per model replica.")
    ingress_replicas: int = Field(1, ge=1, description="HTTP ingress replicas (auth, limits, image fetching).")
    ingress_num_cpus: float = Field(0.25, ge=0, description="CPUs per ingress replica.")
    critique: bool = Field(True, description="Allow with_critique (generation is slower than scoring).")
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @model_validator(mode="after")
    def _replicas_ordered(self) -> ServingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        return self
