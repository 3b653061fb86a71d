"""``vlgenrm data synth`` writes a dataset into the configured store."""

from __future__ import annotations

import inspect
import re

from typer.testing import CliRunner

from vlgenrm.cli.data import data_app, synth
from vlgenrm.cli.main import app
from vlgenrm.store import LocalStore
from vlgenrm.synth.dataset import SynthConfig, load_manifest

# cli/main.py registers data_app itself; until then, register it in this process only.
if not any(group.typer_instance is data_app for group in app.registered_groups):
    app.add_typer(data_app, name="data")

runner = CliRunner()


def flat(output: str) -> str:
    return " ".join(re.sub(r"[│┃║]", " ", output).split())


def test_synth_writes_a_dataset_to_the_store_from_settings(tmp_path):
    result = runner.invoke(
        app,
        [
            "--set",
            f"store.root={tmp_path}",
            "data",
            "synth",
            "--name",
            "cli",
            "--train",
            "12",
            "--eval",
            "5",
            "--shard-size",
            "8",
            "--seed",
            "2",
            "--label-noise",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = load_manifest(LocalStore(tmp_path), "cli")
    assert manifest.splits["train"].count == 12 and len(manifest.splits["train"].shards) == 2
    assert manifest.config.label_noise == 0.5 and manifest.config.seed == 2
    output = flat(result.output)
    assert "train 12 2" in output and "eval 5 1" in output
    assert "manifest.json" in result.output.replace("\n", "") and "file://" in result.output


def test_synth_honours_the_store_env_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("VLGENRM_STORE__ROOT", str(tmp_path))
    result = runner.invoke(app, ["data", "synth", "--train", "2", "--eval", "0"])
    assert result.exit_code == 0, result.output
    assert load_manifest(LocalStore(tmp_path), "synth").splits["train"].count == 2


def test_invalid_options_exit_2(tmp_path):
    result = runner.invoke(app, ["--set", f"store.root={tmp_path}", "data", "synth", "--name", "bad/name"])
    assert result.exit_code == 2 and "invalid options" in result.output


def test_cli_defaults_match_the_config_defaults():
    defaults = {p.name: p.default for p in inspect.signature(synth).parameters.values() if p.name != "ctx"}
    config = SynthConfig()
    assert defaults == {
        "name": config.name,
        "train": config.n_train,
        "eval_": config.n_eval,
        "image_size": config.image_size,
        "label_noise": config.label_noise,
        "seed": config.seed,
        "shard_size": config.shard_size,
    }
