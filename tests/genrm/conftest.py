"""Tiny GenRM checkpoints, built once per session and loaded like real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import png  # noqa: F401 - the genrm tests' image, imported from here
from vlgenrm.contracts import Choice
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, PairwiseQuery
from vlgenrm.genrm.tiny import build_tiny_genrm

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "llava"]
#: The GPU check runs this suite with VLGENRM_TEST_DEVICE=cuda; CI runs it on the CPU.
DEVICE = os.environ.get("VLGENRM_TEST_DEVICE", "cpu")
#: Queries of different images, sizes and lengths, with and without a critique (scoring tests).
QUERIES = [
    PairwiseQuery(png((250, 10, 10)), "What colour is the square?", "It is red.", "It is a blue square with text.", critique="Response A says red."),
    PairwiseQuery(png((10, 10, 250)), "What is shown?", "A red circle and two stars.", "Blue.", critique=""),
    PairwiseQuery(png((10, 250, 10), size=80), "Colour?", "Green.", "Purple triangle.", critique="Response B mentions a purple triangle that is missing."),
]
TARGETS = [Choice.A, Choice.B, Choice.A]


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
