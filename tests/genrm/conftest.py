"""Tiny GenRM checkpoints, built once per session and loaded like real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import png  # noqa: F401 - the genrm tests' image, imported from here
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM
from vlgenrm.genrm.tiny import build_tiny_genrm

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "llava"]
#: The GPU check runs this suite with VLGENRM_TEST_DEVICE=cuda; CI runs it on the CPU.
DEVICE = os.environ.get("VLGENRM_TEST_DEVICE", "cpu")


def load(path: Path, **kwargs) -> GenRM:
    """Load a tiny checkpoint on the test device, through the path real checkpoints take."""
    return GenRM.load(path, GenRMSettings(device=DEVICE, **kwargs.pop("settings", {})), **kwargs)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_genrm(root / family, family, seed=0) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def genrm(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]) -> GenRM:
    return load(tiny_dirs[request.param])


@pytest.fixture
def qwen(tiny_dirs: dict[str, Path]) -> GenRM:
    return load(tiny_dirs["qwen2_vl"])
