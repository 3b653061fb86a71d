"""The test tree mirrors the source tree: every test folder names a source package, and test
modules share helpers through tests/support or a conftest, never by importing each other."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO
from tests.support.source import imports

#: Test folders for things that are not under shared/vlgenrm.
ROOTS = {"services": REPO / "services", "operators": REPO / "operators", "charts": REPO / "charts", "infra": REPO / "scripts" / "infra"}
HELPERS = {"support"}
#: Data folders inside a test package (inputs the tests replay, no Python).
DATA = {"corpus"}


def source_of(test_dir: Path, tests: Path) -> Path | None:
    """The source folder ``test_dir`` mirrors (None when it mirrors nothing)."""
    first, *rest = test_dir.relative_to(tests).parts
    base = ROOTS.get(first, REPO / "shared" / "vlgenrm" / first)
    path = base.joinpath(*rest)
    return path if path.is_dir() else None


def unmirrored(tests: Path) -> list[str]:
    dirs = [d for d in sorted(tests.rglob("*")) if d.is_dir() and d.name != "__pycache__" and not d.name.startswith(".")]
    return [str(d.relative_to(tests)) for d in dirs if d.relative_to(tests).parts[0] not in HELPERS and d.name not in DATA and source_of(d, tests) is None]


def cross_imports(tests: Path) -> list[str]:
    """``file: module`` for every import of another test module (``tests.<...>.test_*``)."""
    found = []
    for path in sorted(tests.rglob("*.py")):
        package = ".".join(("tests", *path.relative_to(tests).parts[:-1]))
        found += [f"{path.relative_to(tests)}: {m}" for _, m in imports(path, package) if m.startswith("tests.") and m.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_every_test_folder_names_a_source_package():
    assert unmirrored(REPO / "tests") == []


def test_no_test_module_imports_another():
    assert cross_imports(REPO / "tests") == []


def test_the_checks_catch_a_stray_folder_and_a_cross_import(tmp_path):
    (tmp_path / "bus").mkdir()
    (tmp_path / "gadgets").mkdir()
    (tmp_path / "support").mkdir()
    (tmp_path / "bus" / "test_a.py").write_text("from tests.bus.test_b import helper\nimport tests.support.bus\n")
    assert unmirrored(tmp_path) == ["gadgets"]
    assert cross_imports(tmp_path) == ["bus/test_a.py: tests.bus.test_b"]
