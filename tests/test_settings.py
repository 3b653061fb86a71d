"""Settings precedence: defaults < file < environment < CLI overrides."""

from __future__ import annotations

import pytest

from vlgenrm.errors import ConfigError
from vlgenrm.settings import BusKind, StoreKind, load_settings, parse_overrides


def test_defaults_are_the_embedded_mode(monkeypatch):
    monkeypatch.delenv("VLGENRM_CONFIG", raising=False)
    s = load_settings()
    assert s.bus.kind is BusKind.MEMORY and s.store.kind is StoreKind.LOCAL


def test_file_then_env_then_overrides(tmp_path, monkeypatch):
    config = tmp_path / "vlgenrm.yaml"
    config.write_text("bus:\n  kind: kafka\n  bootstrap_servers: file:9092\n  partitions: 8\nstore:\n  bucket: from-file\n")
    monkeypatch.setenv("VLGENRM_BUS__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("VLGENRM_STORE__BUCKET", "from-env")
    s = load_settings(config, ["store.bucket=from-cli", "store.part_size_mb=32"])
    assert s.bus.kind is BusKind.KAFKA  # file
    assert s.bus.partitions == 8  # file
    assert s.bus.bootstrap_servers == "env:9092"  # env beats file
    assert s.store.bucket == "from-cli"  # CLI beats env
    assert s.store.part_size_mb == 32


def test_config_file_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("namespace: research\n")
    monkeypatch.setenv("VLGENRM_CONFIG", str(config))
    assert load_settings().namespace == "research"


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["bus.kind"])
    with pytest.raises(ValueError, match="part_size_mb"):
        load_settings(overrides=["store.part_size_mb=1"])
    with pytest.raises(ValueError, match="kind"):
        load_settings(overrides=["bus.kind=rabbitmq"])
