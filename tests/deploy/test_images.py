"""Static checks of the container images (docker/) and skaffold.yaml: no Docker, no cluster.

They catch what would otherwise fail only in a build or on a cluster: a COPY of a path the build
context lacks or .dockerignore hides, an unpinned base image, an image that ends as root or
whose default command does not exist, a chart command the images cannot run, stale paths in
skaffold.yaml (profiles and their patches included), and GPU constraints with two pins for one
package. The GPU pin set itself is not resolved here (see docs/deploy.md).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCKERFILES = {"vlgenrm-cpu": REPO / "docker" / "cpu.Dockerfile", "vlgenrm-gpu": REPO / "docker" / "gpu.Dockerfile"}
GPU_PINS = REPO / "docker" / "gpu-pins.txt"
SKAFFOLD = REPO / "skaffold.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

#: The container commands the chart runs (``python -m <module>``), by the image that runs them.
CHART_MODULES = {
    "vlgenrm-cpu": ["vlgenrm.operators.iteration", "vlgenrm.services.experts", "vlgenrm.services.sampler"],
    "vlgenrm-gpu": ["vlgenrm.services.trainer", "vlgenrm.services.rationale", "vlgenrm.services.scorer"],
}
#: The extras each image needs for the modules it runs (see the Dockerfiles' EXTRAS).
REQUIRED_EXTRAS = {"vlgenrm-cpu": {"ml", "experts", "operator"}, "vlgenrm-gpu": {"ml", "ray"}}
#: What docker build copies: must reach the build context.
BUILD_INPUTS = ["README.md", "pyproject.toml", "setup.py", "constraints.txt", "shared", "services", "operators", "docker/gpu-pins.txt"]


# --- a small Dockerfile reader -------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest, continuation lines joined
    line: int


@dataclass
class Stage:
    base: str  # the FROM image, global ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self, global_args: dict[str, str]) -> dict[str, str]:
        """The stage's ARGs with their defaults (a bare ``ARG X`` inherits the global default)."""
        out = {}
        for instr in self.all("ARG"):
            name, eq, default = instr.args.partition("=")
            out[name.strip()] = default.strip().strip('"') if eq else global_args.get(name.strip(), "")
        return out

    def env(self) -> dict[str, str]:
        out = {}
        for instr in self.all("ENV"):
            tokens = shlex.split(instr.args)
            if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
                out[tokens[0]] = " ".join(tokens[1:])
                continue
            for token in tokens:
                key, _, value = token.partition("=")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def run_commands(self) -> list[str]:
        return [i.args for s in self.stages for i in s.all("RUN")]


def read_instructions(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped
    (also inside a continuation, as Docker does)."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(parts).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, f"{path.name}: ends inside a line continuation"
    return out


def substitute(text: str, variables: dict[str, str]) -> str:
    """``$X`` and ``${X}`` from ``variables`` (unknown names stay as they are)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instr in read_instructions(path):
        if instr.keyword == "FROM":
            tokens = [t for t in instr.args.split() if not t.startswith("--platform")]
            name = tokens[2] if len(tokens) == 3 and tokens[1].upper() == "AS" else None
            assert len(tokens) in (1, 3), f"{path.name}:{instr.line}: cannot read FROM {instr.args}"
            stages.append(Stage(substitute(tokens[0], global_args), name))
        elif not stages:
            assert instr.keyword == "ARG", f"{path.name}:{instr.line}: only ARG may come before the first FROM"
            name, _, default = instr.args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(instr)
    assert stages, f"{path.name}: no FROM"
    return Dockerfile(path, global_args, stages)


def exec_form(instr: Instruction) -> list[str]:
    """The argv of an exec-form (JSON) CMD or ENTRYPOINT; fails on the shell form."""
    assert instr.args.startswith("["), f"line {instr.line}: {instr.keyword} should use the exec (JSON) form so signals reach the process"
    argv = json.loads(instr.args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def copy_sources(instr: Instruction) -> list[str] | None:
    """The sources of a COPY/ADD from the build context (None for ``--from=``)."""
    tokens = json.loads(instr.args) if instr.args.startswith("[") else shlex.split(instr.args)
    flags = [t for t in tokens if t.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    paths = [t for t in tokens if not t.startswith("--")]
    assert len(paths) >= 2, f"line {instr.line}: COPY needs a source and a destination"
    return paths[:-1]


# --- .dockerignore, with Docker's matching rules --------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(path: Path = REPO / ".dockerignore") -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = re.sub(r"/+", "/", pattern).strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_ignored(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parent folders, wins."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negated
    return ignored


def tracked_files(relpath: str) -> list[str]:
    """The files at or under ``relpath`` that git tracks or would (not git-ignored): the sources."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", relpath], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


# --- helpers shared by the tests --------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> list[tuple[str, str]]:
    """``(canonical name, version)`` for every ``name==version`` line; other lines must be comments."""
    pins = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]*)==([A-Za-z0-9_.+!-]+)", line)
        assert match, f"not an exact pin: {raw!r}"
        pins.append((canonical(match.group(1)), match.group(2)))
    return pins


def module_has_main(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    return spec.submodule_search_locations is None or importlib.util.find_spec(f"{module}.__main__") is not None


def image_extras(image: str) -> set[str]:
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    build = dockerfile.stages[0]
    return set(filter(None, build.args(dockerfile.global_args).get("EXTRAS", "").split(",")))


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def dockerfile(image) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[image])


# --- Dockerfiles ------------------------------------------------------------------------------


def test_dockerfile_reader_joins_continuations_and_skips_comments(tmp_path):
    """The reader itself: continuation lines, comments inside them, ARG substitution in FROM."""
    path = tmp_path / "Dockerfile"
    path.write_text('ARG BASE=python:3.11.14-slim\nFROM ${BASE} AS build\nRUN a \\\n# dropped\n    && b\nFROM build\nCMD ["x"]\n')
    parsed = parse_dockerfile(path)
    assert [s.base for s in parsed.stages] == ["python:3.11.14-slim", "build"]
    assert parsed.stages[0].all("RUN")[0].args == "a && b"
    assert exec_form(parsed.final.all("CMD")[0]) == ["x"]


def test_every_base_image_is_pinned(dockerfile):
    """FROM names an exact version (major.minor.patch) or a digest, or an earlier stage."""
    earlier: set[str] = set()
    for stage in dockerfile.stages:
        base = stage.base
        assert "$" not in base, f"{dockerfile.path.name}: FROM {base}: unresolved variable"
        if base in earlier:  # an earlier stage, by its alias
            pass
        elif "@" in base:
            assert re.search(r"@sha256:[0-9a-f]{64}$", base), f"FROM {base}: malformed digest"
        else:
            name, _, tag = base.rpartition(":")
            assert name and "/" not in tag, f"FROM {base}: no tag (means :latest)"
            assert tag != "latest" and re.match(r"v?\d+\.\d+\.\d+", tag), f"FROM {base}: tag {tag!r} is not an exact version"
        if stage.name:
            earlier.add(stage.name)
    assert len({s.base for s in dockerfile.stages if s.base not in earlier}) == 1, "build and runtime stages should share one base"


def test_image_is_multi_stage_and_ends_as_non_root(dockerfile):
    """A build stage builds the wheel, the runtime stage copies only its result and ends as vlgenrm (uid 1000)."""
    assert len(dockerfile.stages) >= 2
    build, final = dockerfile.stages[0], dockerfile.final
    assert any("pip wheel" in r.args for r in build.all("RUN")), "the build stage should build the project's wheel"
    assert any(c.args.startswith(f"--from={build.name} ") for c in final.all("COPY")), "the runtime stage should copy from the build stage"
    users = final.all("USER")
    assert users, "the image must not run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"the final USER is {users[-1].args}"
    assert user in ("1000", "vlgenrm")
    assert any(re.search(r"useradd .*--uid 1000\b.*\bvlgenrm$", r.args) for r in final.all("RUN")), "create the vlgenrm user with uid 1000"
    assert final.all("WORKDIR")[-1].args == "/home/vlgenrm"
    assert final.instructions.index(users[-1]) > max(final.instructions.index(r) for r in final.all("RUN")), "USER must come after the last RUN"


def test_runtime_environment_suits_a_read_only_root(dockerfile):
    """HOME, unbuffered output, no pip cache; every cache the libraries write goes under /tmp (the chart's emptyDir)."""
    env = dockerfile.final.env()
    assert env.get("HOME") == "/home/vlgenrm"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PIP_NO_CACHE_DIR") == "1"
    assert env.get("HF_HOME", "").startswith("/tmp/")
    caches = {k: v for k, v in env.items() if k != "HOME" and v.startswith("/") and re.search(r"(_HOME|_DIR|_ROOT|_BASE|CACHE)", k)}
    assert "XDG_CACHE_HOME" in caches
    for key, value in caches.items():
        assert value == "/tmp" or value.startswith("/tmp/"), f"{key}={value} is not writable under a read-only root"


def test_copy_sources_exist_and_reach_the_build_context(dockerfile):
    """Every COPY source exists, and no source file under it is hidden by .dockerignore."""
    rules = dockerignore_rules()
    copied = []
    for stage in dockerfile.stages:
        for instr in stage.all("COPY") + stage.all("ADD"):
            for source in copy_sources(instr) or []:
                source = source.rstrip("/").removeprefix("./")
                assert list(REPO.glob(source)), f"{dockerfile.path.name}:{instr.line}: COPY {source}: no such path"
                hidden = [f for f in tracked_files(source) or [source] if is_ignored(f, rules)]
                assert not hidden, f"{dockerfile.path.name}:{instr.line}: .dockerignore hides {hidden[:5]}"
                copied.append(source)
    for needed in ("README.md", "pyproject.toml", "setup.py", "constraints.txt", "shared", "services", "operators"):
        assert needed in copied, f"{dockerfile.path.name} does not copy {needed}"


def test_default_command_is_one_the_image_provides(dockerfile):
    """ENTRYPOINT + CMD run a console script of this project or a ``python -m`` module that exists."""
    final = dockerfile.final
    argv = (exec_form(final.all("ENTRYPOINT")[-1]) if final.all("ENTRYPOINT") else []) + (exec_form(final.all("CMD")[-1]) if final.all("CMD") else [])
    assert argv, "give the image a default command"
    scripts = PYPROJECT["project"]["scripts"]
    if argv[0] in ("python", "python3"):
        assert argv[1] == "-m" and module_has_main(argv[2]), f"{argv} does not resolve"
    else:
        assert argv[0] in scripts, f"{argv[0]} is not a console script of vlgenrm ({sorted(scripts)})"
        module, _, function = scripts[argv[0]].partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), f"{scripts[argv[0]]} does not resolve"


def test_extras_cover_the_modules_each_image_runs(image):
    """The EXTRAS build arg names real extras of pyproject.toml and includes what the image's services import."""
    extras = image_extras(image)
    known = set(PYPROJECT["project"]["optional-dependencies"])
    assert extras <= known, f"unknown extras {extras - known}"
    assert REQUIRED_EXTRAS[image] <= extras, f"{image} lacks extras {REQUIRED_EXTRAS[image] - extras}"


def test_every_pip_install_is_constrained(dockerfile):
    """Nothing installs unpinned: each pip install in the build uses a constraints file (or --no-deps for the wheel)."""
    installs = [m.group(0) for run in dockerfile.run_commands for m in re.finditer(r"pip install[^;&|]*", run)]
    assert installs
    for command in installs:
        assert re.search(r"(^|\s)-c\s+\S*constraints\.txt", command) or "--no-deps" in command, f"unconstrained: {command}"


def test_cpu_torch_comes_from_the_cpu_wheel_index():
    """The CPU image and the GPU image's cpu variant take torch's +cpu build (no CUDA wheels)."""
    for image in DOCKERFILES:
        parsed = parse_dockerfile(DOCKERFILES[image])
        assert parsed.stages[0].args(parsed.global_args).get("TORCH_CPU_INDEX") == "https://download.pytorch.org/whl/cpu"
        assert any('--extra-index-url "$TORCH_CPU_INDEX"' in r and "+cpu" in r for r in parsed.run_commands), image


def test_cpu_image_has_tesseract():
    """The OCR expert's second voter is a system package."""
    runs = parse_dockerfile(DOCKERFILES["vlgenrm-cpu"]).final.all("RUN")
    assert any(re.search(r"apt-get install\b.*\btesseract-ocr\b", r.args) for r in runs)


def test_gpu_image_is_a_kuberay_node_image():
    """Ray with Serve and Train, wget for KubeRay's probes, and the venv on PATH in login shells (KubeRay runs `bash -lc`)."""
    parsed = parse_dockerfile(DOCKERFILES["vlgenrm-gpu"])
    ray_extra = PYPROJECT["project"]["optional-dependencies"]["ray"]
    assert any(re.match(r"ray\[.*\bserve\b.*\]", r) and "train" in r for r in ray_extra)
    runs = [r.args for r in parsed.final.all("RUN")]
    assert any(re.search(r"pkgs=\"wget|apt-get install\b.*\bwget\b", r) for r in runs), "install wget"
    assert any("/etc/profile.d/" in r and "/opt/venv/bin" in r for r in runs), "put /opt/venv/bin on PATH for login shells"
    assert parsed.final.env()["PATH"].startswith("/opt/venv/bin:")
    assert parsed.global_args.get("TORCH_VARIANT") == "cu"


# --- the chart's commands ---------------------------------------------------------------------


@pytest.mark.parametrize("module", [m for modules in CHART_MODULES.values() for m in modules])
def test_chart_container_commands_resolve(module):
    """``python -m <module>`` works: the module exists and, being a package, has a __main__."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is not importable"
    assert spec.submodule_search_locations is not None, f"{module} should be a package"
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_console_script_and_serve_import_path_resolve():
    """The ``vlgenrm`` console script and the scorer's Ray Serve import path (module:attribute) exist."""
    module, _, function = PYPROJECT["project"]["scripts"]["vlgenrm"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    spec = importlib.util.find_spec("vlgenrm.services.scorer.app")  # not imported: that would start Ray Serve's import chain
    assert spec is not None and spec.origin
    tree = ast.parse(Path(spec.origin).read_text())
    assert "app_builder" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


# --- the GPU pin override ---------------------------------------------------------------------


def constraints_command() -> str:
    """The build-stage RUN of gpu.Dockerfile that writes image-constraints.txt."""
    runs = [r for r in parse_dockerfile(DOCKERFILES["vlgenrm-gpu"]).stages[0].all("RUN") if "gpu-pins.txt" in r.args]
    assert len(runs) == 1, "expected one RUN that merges docker/gpu-pins.txt into the constraints"
    assert "> image-constraints.txt" in runs[0].args
    return runs[0].args


def build_constraints(tmp_path: Path, variant: str) -> subprocess.CompletedProcess[str]:
    """Run that exact command with /bin/sh (as docker build does) on copies of the two inputs."""
    if shutil.which("sh") is None:
        pytest.skip("needs a POSIX shell")
    (tmp_path / "docker").mkdir(exist_ok=True)
    shutil.copy(REPO / "constraints.txt", tmp_path / "constraints.txt")
    shutil.copy(GPU_PINS, tmp_path / "docker" / "gpu-pins.txt")
    env = {"PATH": "/usr/bin:/bin", "TORCH_VARIANT": variant}
    return subprocess.run(["sh", "-c", constraints_command()], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_gpu_pins_pin_vllm_torch_and_transformers():
    """gpu-pins.txt holds only exact pins, one per package, including vllm, torch and transformers."""
    pins = read_pins(GPU_PINS.read_text())
    names = [n for n, _ in pins]
    assert len(names) == len(set(names)), "a package pinned twice"
    assert {"vllm", "torch", "transformers"} <= set(names)
    assert "#" in GPU_PINS.read_text(), "say why these pins differ from constraints.txt"


def test_gpu_constraints_have_one_pin_per_package(tmp_path):
    """cu: constraints.txt minus the overridden and CUDA lines, plus gpu-pins.txt, one pin each."""
    result = build_constraints(tmp_path, "cu")
    assert result.returncode == 0, result.stderr
    merged = read_pins((tmp_path / "image-constraints.txt").read_text())
    names = [n for n, _ in merged]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"pinned twice: {duplicates}"
    merged_pins, gpu_pins = dict(merged), dict(read_pins(GPU_PINS.read_text()))
    base = dict(read_pins((REPO / "constraints.txt").read_text()))
    for name, version in gpu_pins.items():
        assert merged_pins[name] == version, f"{name}: gpu-pins.txt says {version}, the image gets {merged_pins[name]}"
    for name, version in base.items():
        if name in gpu_pins:
            continue
        if re.match(r"(nvidia-|cuda-|triton$)", name):
            assert name not in merged_pins, f"{name}=={version} is torch {base['torch']}'s CUDA wheel: it must not constrain torch {gpu_pins['torch']}"
        else:
            assert merged_pins.get(name) == version, f"{name}: the tested pin {version} was lost"


def test_gpu_dev_variant_uses_the_tested_constraints(tmp_path):
    """cpu (the dev variant, no vLLM) installs with constraints.txt unchanged; unknown variants fail the build."""
    result = build_constraints(tmp_path, "cpu")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "image-constraints.txt").read_text() == (REPO / "constraints.txt").read_text()
    assert build_constraints(tmp_path, "cuda").returncode != 0


def test_gpu_variant_installs_vllm_from_the_pins():
    """vllm is a requirement of the cu build only; its version comes from the constraints."""
    runs = parse_dockerfile(DOCKERFILES["vlgenrm-gpu"]).stages[0].all("RUN")
    assert any(re.search(r'\[ "\$TORCH_VARIANT" = cu \]; then echo vllm >> requirements\.txt', r.args) for r in runs)


# --- .dockerignore ----------------------------------------------------------------------------


def test_dockerignore_matcher_follows_docker_rules():
    """Last match wins, parents count, ** spans folders."""
    rules = [(False, _pattern_regex("*")), (True, _pattern_regex("src")), (False, _pattern_regex("**/__pycache__"))]
    assert is_ignored("tests/x.py", rules) and not is_ignored("src/a/b.py", rules)
    assert is_ignored("src/a/__pycache__/b.pyc", rules)


def test_dockerignore_keeps_build_inputs_and_drops_the_rest():
    """Build inputs reach the context; the venv, git, tests and caches do not."""
    rules = dockerignore_rules()
    assert rules, "add a .dockerignore (the context would carry .venv and .git)"
    for path in BUILD_INPUTS:
        files = tracked_files(path) or [path]
        hidden = [f for f in files if is_ignored(f, rules)]
        assert not hidden, f".dockerignore hides {hidden[:5]}"
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "shared/vlgenrm/__pycache__/settings.cpython-311.pyc", "vlgenrm.egg-info/PKG-INFO"):
        assert is_ignored(path, rules), f"{path} would be sent to the build"


# --- skaffold.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skaffold() -> dict:
    return yaml.safe_load(SKAFFOLD.read_text())


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), f"patch path {path!r} must start with /"
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def apply_patch(doc: dict, op: dict) -> None:
    """One JSON-patch operation (add, replace, remove), failing on a path that does not exist."""
    *parents, last = _pointer(op["path"])
    target = doc
    for token in parents:
        target = target[int(token)] if isinstance(target, list) else target[token]
    kind = op.get("op", "replace")
    if isinstance(target, list):
        if kind == "add":
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        elif kind == "replace":
            target[int(last)] = op["value"]
        elif kind == "remove":
            del target[int(last)]
        else:
            raise AssertionError(f"unsupported op {kind}")
    else:
        assert isinstance(target, dict), f"{op['path']}: parent is not an object"
        if kind in ("replace", "remove"):
            assert last in target, f"{op['path']}: nothing to {kind}"
        if kind == "remove":
            del target[last]
        elif kind in ("add", "replace"):
            target[last] = op["value"]
        else:
            raise AssertionError(f"unsupported op {kind}")


def _drop_empty(node):
    """Skaffold marshals the config before patching: empty lists and nulls disappear (omitempty)."""
    if isinstance(node, dict):
        return {k: _drop_empty(v) for k, v in node.items() if v is not None and v != []}
    if isinstance(node, list):
        return [_drop_empty(v) for v in node]
    return node


def _overlay(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _overlay(base.get(k), over.get(k)) if k in over else base[k] for k in base.keys() | over.keys()}
    return base if over in (None, [], "") else over


def effective_config(config: dict, profile: str | None) -> dict:
    """The config skaffold runs with a profile: the profile's fields overlaid, then its patches."""
    doc = copy.deepcopy({k: v for k, v in config.items() if k != "profiles"})
    if profile is None:
        return doc
    [prof] = [p for p in config.get("profiles", []) if p["name"] == profile]
    for key, value in prof.items():
        if key not in ("name", "activation", "patches", "requiresAllActivations"):
            doc[key] = _overlay(doc.get(key), value)
    if prof.get("patches"):
        doc = _drop_empty(doc)
        for op in prof["patches"]:
            apply_patch(doc, copy.deepcopy(op))
    return doc


def template_key(image: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_effective_config_applies_patches():
    """The profile emulation: patches see a config without empty lists, like skaffold's."""
    config = {
        "a": {"b": [], "c": {"d": 1}},
        "profiles": [{"name": "p", "patches": [{"op": "replace", "path": "/a/c/d", "value": 2}, {"op": "add", "path": "/a/b", "value": ["x"]}]}],
    }
    assert effective_config(config, "p")["a"] == {"b": ["x"], "c": {"d": 2}}
    config["profiles"][0]["patches"] = [{"op": "add", "path": "/a/b/-", "value": "x"}]
    with pytest.raises(KeyError):
        effective_config(config, "p")


def test_skaffold_names_both_images_and_the_chart(skaffold):
    """Schema version, the two docker artifacts, git-commit tags, BuildKit, one helm release."""
    assert skaffold["apiVersion"] == "skaffold/v4beta13" and skaffold["kind"] == "Config"
    assert skaffold["metadata"]["name"] == "vlgenrm"
    build = skaffold["build"]
    assert {a["image"]: a["docker"]["dockerfile"] for a in build["artifacts"]} == {image: str(path.relative_to(REPO)) for image, path in DOCKERFILES.items()}
    assert "gitCommit" in build["tagPolicy"] and build["local"]["useBuildkit"] is True
    [release] = skaffold["deploy"]["helm"]["releases"]
    assert release["name"] == "vlgenrm" and release["chartPath"] == "charts/vlgenrm"
    assert release["namespace"] == "vlgenrm" and release["createNamespace"] is True
    assert {p["name"] for p in skaffold["profiles"]} >= {"dev", "gpu"}


@pytest.mark.parametrize("profile", [None, "dev", "gpu"])
def test_skaffold_paths_exist(skaffold, profile):
    """Dockerfiles, contexts, the chart and values files named by the config (with the profile applied) exist."""
    config = effective_config(skaffold, profile)
    for artifact in config["build"]["artifacts"]:
        context = REPO / artifact.get("context", ".")
        assert context.is_dir(), f"context {context} missing"
        assert (context / artifact["docker"]["dockerfile"]).is_file()
        variant = artifact["docker"].get("buildArgs", {}).get("TORCH_VARIANT")
        assert variant in (None, "cu", "cpu"), f"TORCH_VARIANT={variant}: gpu.Dockerfile knows cu and cpu"
    for release in config["deploy"]["helm"]["releases"]:
        assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
        for values in release.get("valuesFiles", []):
            assert (REPO / values).is_file(), f"valuesFiles: {values} missing"


def test_skaffold_profiles_do_what_they_say(skaffold):
    """dev: CPU torch in the GPU image, no push, values-dev; gpu: CUDA build, push, values-gpu."""
    dev, gpu = effective_config(skaffold, "dev"), effective_config(skaffold, "gpu")
    gpu_artifact = lambda cfg: next(a for a in cfg["build"]["artifacts"] if a["image"] == "vlgenrm-gpu")  # noqa: E731
    assert gpu_artifact(dev)["docker"]["buildArgs"]["TORCH_VARIANT"] == "cpu"
    assert gpu_artifact(gpu)["docker"]["buildArgs"].get("TORCH_VARIANT", "cu") == "cu"
    assert dev["build"]["local"]["push"] is False and gpu["build"]["local"]["push"] is True
    assert dev["deploy"]["helm"]["releases"][0]["valuesFiles"] == ["examples/values-dev.yaml"]
    assert gpu["deploy"]["helm"]["releases"][0]["valuesFiles"] == ["examples/values-gpu.yaml"]


def test_every_artifact_is_wired_into_the_chart(skaffold):
    """Each built image's repository and tag reach the chart's image.<cpu|gpu> values."""
    [release] = skaffold["deploy"]["helm"]["releases"]
    templates = release["setValueTemplates"]
    for artifact in skaffold["build"]["artifacts"]:
        key, which = template_key(artifact["image"]), artifact["image"].removeprefix("vlgenrm-")
        assert templates.get(f"image.{which}.repository") == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates.get(f"image.{which}.tag") == f"{{{{.IMAGE_TAG_{key}}}}}"
    values_file = REPO / "charts" / "vlgenrm" / "values.yaml"
    if values_file.exists():  # the chart's own values must have the keys skaffold sets
        values = yaml.safe_load(values_file.read_text())
        for dotted in templates:
            node = values
            for part in dotted.split("."):
                assert isinstance(node, dict) and part in node, f"charts/vlgenrm/values.yaml has no {dotted}"
                node = node[part]


def test_skaffold_forwards_the_scorer(skaffold):
    """The scorer's Serve endpoint is forwarded on port 8000."""
    forwards = skaffold["portForward"]
    assert {"resourceType": "service", "resourceName": "vlgenrm-scorer-serve-svc", "port": 8000} in [
        {k: f[k] for k in ("resourceType", "resourceName", "port")} for f in forwards
    ]
