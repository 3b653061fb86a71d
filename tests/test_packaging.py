"""One distribution, one import root: both an editable install and a built wheel work.

Each install goes into a fresh virtual environment that sees this environment's
site-packages for the dependencies, so the test proves the packaging, not the resolver.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SOURCES = ["pyproject.toml", "setup.py", "README.md", "shared", "services", "operators"]
PROBE = (
    "import vlgenrm, vlgenrm.services, vlgenrm.operators, vlgenrm.bus.kafka, vlgenrm.store.s3, vlgenrm.cli.main;"
    "print(vlgenrm.__file__); print(vlgenrm.services.__file__); print(vlgenrm.__version__)"
)


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Dependencies come from the test environment; vlgenrm itself must come from the install.
    (Path(purelib) / "deps.pth").write_text("\n".join(p for p in site.getsitepackages()) + "\n")
    return python


def pip(python: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation", "-q", *args], check=True)


def copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = REPO / name
        (shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")) if src.is_dir() else shutil.copy2(src, dest / name))
    return dest


def probe(python: Path, cwd: Path) -> list[str]:
    out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, cwd=cwd, check=True)
    return out.stdout.split()


def test_built_wheel_installs_and_runs(tmp_path):
    src = copy_sources(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)], check=True)
    [wheel] = (tmp_path / "dist").glob("vlgenrm-*.whl")
    python = fresh_venv(tmp_path / "venv")
    pip(python, str(wheel))
    core, services, version = probe(python, tmp_path)
    assert "site-packages/vlgenrm/" in core and "site-packages/vlgenrm/services/" in services
    assert version != "0.0.0+unknown"
    out = subprocess.run([tmp_path / "venv" / "bin" / "vlgenrm", "schemas", "export", "--out", str(tmp_path / "schemas")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(p.name for p in (REPO / "schemas").iterdir())


def test_editable_install_maps_the_three_folders(tmp_path):
    src = copy_sources(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    pip(python, "-e", str(src))
    core, services, _ = probe(python, tmp_path)
    assert core == str(src / "shared" / "vlgenrm" / "__init__.py")
    assert services == str(src / "services" / "__init__.py")
    # Editable means edits show up without reinstalling.
    (src / "services" / "probe_module.py").write_text("VALUE = 42\n")
    out = subprocess.run([python, "-c", "from vlgenrm.services.probe_module import VALUE; print(VALUE)"], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "42", out.stderr
