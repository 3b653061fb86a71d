"""Tiny GenRM checkpoints, built once per session and loaded like real ones."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from vlgenrm.genrm.model import GenRM
from vlgenrm.genrm.tiny import build_tiny_genrm

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "llava"]


def png(colour: tuple[int, int, int], size: int = 56) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_genrm(root / family, family, seed=0) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def genrm(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]) -> GenRM:
    return GenRM.load(tiny_dirs[request.param])


@pytest.fixture
def qwen(tiny_dirs: dict[str, Path]) -> GenRM:
    return GenRM.load(tiny_dirs["qwen2_vl"])
