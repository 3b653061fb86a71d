"""The vlgenrm command line: help, schema export/check, config, doctor."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO
from tests.support.cli import invoke


def test_help_explains_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ("schemas", "doctor", "config", "VLGENRM_"):
        assert word in result.output


def test_schemas_export_then_check(tmp_path):
    assert invoke("schemas", "export", "--out", str(tmp_path)).exit_code == 0
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in (REPO / "schemas").iterdir()}
    assert invoke("schemas", "check", "--dir", str(tmp_path)).exit_code == 0
    (tmp_path / "StageTask.v1.schema.json").write_text("{}")
    result = invoke("schemas", "check", "--dir", str(tmp_path))
    assert result.exit_code == 1 and "StageTask.v1.schema.json" in result.output


def test_config_show_masks_secrets():
    result = invoke("--set", "store.secret_key=hunter2", "config", "show")
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "secret_key" in result.output


def test_invalid_settings_exit_2_with_a_message():
    result = invoke("--set", "bus.kind=carrier-pigeon", "config", "show")
    assert result.exit_code == 2 and "invalid settings" in result.output


def test_doctor_on_the_embedded_default(tmp_path):
    result = invoke("--set", f"store.root={tmp_path}", "doctor")
    assert result.exit_code == 0, result.output
    assert "in-memory bus" in result.output and "all checks passed" in result.output


def test_doctor_names_unreachable_servers():
    result = invoke(
        "--set",
        "bus.kind=kafka",
        "--set",
        "bus.bootstrap_servers=127.0.0.1:1",
        "--set",
        "bus.connect_timeout_s=1",
        "--set",
        "store.kind=s3",
        "--set",
        "store.endpoint=127.0.0.1:1",
        "doctor",
    )
    assert result.exit_code == 1
    assert "does not answer" in result.output and "unreachable" in result.output


@pytest.mark.integration
def test_doctor_against_real_kafka_and_s3(kafka_server, s3_server, unique):
    prefix, bucket = unique("doctor"), unique("bucket")
    args = [
        "--set",
        "bus.kind=kafka",
        "--set",
        f"bus.bootstrap_servers={kafka_server.bootstrap_servers}",
        "--set",
        f"bus.topic_prefix={prefix}",
        "--set",
        "store.kind=s3",
        "--set",
        f"store.endpoint={s3_server.endpoint}",
        "--set",
        f"store.access_key={s3_server.access_key}",
        "--set",
        f"store.secret_key={s3_server.secret_key}",
        "--set",
        f"store.bucket={bucket}",
    ]
    before = invoke(*args, "doctor")
    assert before.exit_code == 1, before.output  # the bucket is missing
    assert "missing" in before.output and "answered" in before.output
    fixed = invoke(*args, "doctor", "--fix")
    assert fixed.exit_code == 0, fixed.output
    after = invoke(*args, "doctor")
    assert after.exit_code == 0 and "all 7 topics present" in after.output and "present" in after.output
    wrong = invoke(*args, "--set", "store.secret_key=wrong", "doctor")
    assert wrong.exit_code == 1 and "rejected the credentials" in wrong.output


def test_console_script_is_installed():
    assert shutil.which("vlgenrm") or (REPO / ".venv" / "bin" / "vlgenrm").exists()


def test_serve_hashes_a_key_for_the_config_and_explains_itself():
    import hashlib

    assert invoke("serve", "--hash-key", "s3cret").output == hashlib.sha256(b"s3cret").hexdigest()
    help_text = invoke("serve", "--help").output
    assert "/get_reward" in help_text and "--insecure" in help_text
