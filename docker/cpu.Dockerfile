# vlgenrm-cpu: the Iteration operator, the experts service and the sampler (which also runs the
# evaluation, loading the GenRM with torch/transformers on CPU).
#
#   docker build -f docker/cpu.Dockerfile -t vlgenrm-cpu .      (context: the repository root)
#
# Two stages: `build` installs the pinned dependencies and the project's wheel into /opt/venv,
# `runtime` copies that venv onto a clean base with only the system packages the services use.
# The chart runs it as uid 1000 with a read-only root filesystem and an emptyDir at /tmp, so
# every cache points under /tmp. docs/deploy.md describes both images.

# One exact base for both stages (the venv's interpreter symlink must resolve in runtime).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The extras this image serves: experts (OpenCV, rapidocr), operator (kopf), ml (torch,
# transformers, pyarrow, PIL: the OWLv2 expert, the sampler's evaluation, the operator's reports).
ARG EXTRAS=ml,experts,operator
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml ./
RUN python -m venv /opt/venv \
 && pip install -c constraints.txt "pip==25.3" "setuptools==80.9.0" "wheel==0.48.0"
# torch first, from the CPU wheel index (no CUDA wheels): 2.15.0+cpu satisfies constraints.txt's
# torch==2.15.0, so the PyPI install below keeps it.
RUN pip install -c constraints.txt --extra-index-url "$TORCH_CPU_INDEX" \
      "torch==$(sed -n 's/^torch==//p' constraints.txt)+cpu"
# The dependencies from pyproject.toml's lists (not from the sources), so this layer is reused
# when only the code changes.
RUN python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [r for e in sys.argv[1].split(",") for r in p["optional-dependencies"][e]]))' \
      "$EXTRAS" > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt
# The project itself: build its wheel (setup.py maps shared/, services/, operators/ onto the
# import root vlgenrm), install it without touching the pinned dependencies, check the set.
COPY README.md setup.py ./
COPY shared ./shared
COPY services ./services
COPY operators ./operators
RUN pip wheel --no-deps --no-build-isolation -w /wheels . \
 && pip install --no-deps /wheels/vlgenrm-*.whl \
 && pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="vlgenrm-cpu" \
      org.opencontainers.image.description="vlgenrm: operator, experts and sampler (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# tesseract-ocr (with its English and OSD data): the OCR expert's second voter.
# Debian's versions are not pinned: a point release removes the old ones from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tesseract-ocr \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 vlgenrm \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/vlgenrm --shell /bin/bash vlgenrm
# Root-owned and read-only for the service user: nothing installs at run time.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/vlgenrm \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /home/vlgenrm
# uid:gid 1000:1000 is vlgenrm; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# The chart sets the command per Deployment (python -m vlgenrm.operators.iteration, ...).
CMD ["vlgenrm", "--help"]
