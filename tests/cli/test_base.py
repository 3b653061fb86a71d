"""`vlgenrm base`: build into a cache, show it, run the ladder on a checkpoint."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.cli import invoke
from vlgenrm.genrm.tiny import build_tiny_genrm


def test_build_show_and_ladder(tmp_path: Path) -> None:
    config = tmp_path / "base.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "steps": 3,
                "scenes": 4,
                "simple_items": 2,
                "scaffold_scenes": 2,
                "vision_steps": 2,
                "vision_scenes": 4,
                "eval_items": 2,
                "batch_size": 4,
                "warmup_steps": 1,
                "marked_steps": 2,
                "marked_scenes": 2,
                "replay_scenes": 1,
            }
        )
    )
    cache = tmp_path / "cache"
    missing = invoke("base", "show", "--config", str(config), "--cache-dir", str(cache))
    assert missing.exit_code == 1 and "not built yet" in missing.output
    built = invoke("base", "build", "--config", str(config), "--cache-dir", str(cache), "--out", str(tmp_path / "copy"))
    assert built.exit_code == 0, built.output
    assert "shape_colour" in built.output and (tmp_path / "copy" / "base-report.json").exists()
    shown = invoke("base", "show", "--config", str(config), "--cache-dir", str(cache))
    assert shown.exit_code == 0 and "verify" in shown.output
    ladder = invoke("base", "ladder", "--model", str(build_tiny_genrm(tmp_path / "tiny")), "--items", "3")
    assert ladder.exit_code == 0 and "binding" in ladder.output


def test_invalid_base_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "base.yaml"
    config.write_text("steps: -1\n")
    out = invoke("base", "build", "--config", str(config), "--cache-dir", str(tmp_path))
    assert out.exit_code == 2 and "steps" in out.output
    config.write_text("image_size: 56\n")  # 2 x 2 image tokens cannot name the cells of a 4 x 4 grid
    out = invoke("base", "build", "--config", str(config), "--cache-dir", str(tmp_path))
    assert out.exit_code == 2 and "scene grid" in out.output
