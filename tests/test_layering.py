"""Imports run one way: contracts -> core library -> shells (services, operator, CLI).

Every import is checked, at module level or inside a function, by reading the source (``ast``):
the core never imports a shell, the contracts import nothing but themselves, and the shells do
not import each other. The checker is shown to catch an upward import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.source import imports

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "shared" / "vlgenrm"
#: Import roots of the shells; the CLI is a shell that lives beside the core it drives.
SHELLS = ("vlgenrm.services", "vlgenrm.operators", "vlgenrm.cli")


def _package_of(path: Path, root: Path, name: str) -> str:
    return ".".join((name, *path.relative_to(root).parts[:-1]))  # a module's package, an __init__'s too


def violations(root: Path, name: str, forbidden: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    """Imports of ``forbidden`` roots by the modules under ``root`` (imported as ``name``)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        package = _package_of(path, root, name)
        if package.startswith(skip):
            continue
        for line, module in imports(path, package):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


def test_the_core_never_imports_a_shell():
    assert violations(CORE, "vlgenrm", SHELLS, skip=("vlgenrm.cli",)) == []


def test_the_contracts_import_only_themselves():
    core = ["vlgenrm." + p.name for p in CORE.iterdir() if p.name not in ("contracts", "errors.py", "__pycache__", "__init__.py")]
    core = [m.removesuffix(".py") for m in core]
    assert violations(CORE / "contracts", "vlgenrm.contracts", (*core, *SHELLS)) == []


def test_the_shells_do_not_import_each_other():
    assert violations(ROOT / "services", "vlgenrm.services", ("vlgenrm.operators", "vlgenrm.cli")) == []
    assert violations(ROOT / "operators", "vlgenrm.operators", ("vlgenrm.services", "vlgenrm.cli")) == []


@pytest.mark.parametrize(
    "source",
    [
        "from vlgenrm.services.scorer.app import build_app\n",
        "def f():\n    import vlgenrm.operators.iteration.handlers\n",
        "from vlgenrm import services\n",
        "from ..services import stage_workers\n",
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, source):
    pkg = tmp_path / "vlgenrm" / "iteration"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text(source)
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(violations(tmp_path / "vlgenrm", "vlgenrm", SHELLS)) == 1
    finally:
        ROOT = saved
