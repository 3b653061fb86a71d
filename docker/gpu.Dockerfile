# vlgenrm-gpu: the trainer (Ray Train), the rationale service (vLLM) and the scorer (Ray Serve);
# also the image of the KubeRay clusters those run on (ray CLI on PATH, bash and wget for
# KubeRay's probes).
#
#   docker build -f docker/gpu.Dockerfile -t vlgenrm-gpu .                             (CUDA)
#   docker build -f docker/gpu.Dockerfile --build-arg TORCH_VARIANT=cpu -t vlgenrm-gpu .  (dev)
#
# TORCH_VARIANT=cu (default): torch from PyPI (the CUDA build) plus vLLM. vLLM pins an older torch
#   and transformers than constraints.txt, so this variant installs with constraints.txt minus
#   those lines, plus docker/gpu-pins.txt (see that file). That pin set is not exercised by the
#   test suite (no GPU, no Docker there).
# TORCH_VARIANT=cpu: for CPU-only laptop clusters (kind, minikube): torch from the CPU wheel
#   index, no vLLM (the rationale stage then uses the transformers or openai engine), and
#   constraints.txt unchanged: exactly the set the test suite runs.
#
# Base: python slim, not nvidia/cuda. The PyPI torch and vLLM wheels carry their CUDA user-space
# libraries (nvidia-* wheels: cuBLAS, cuDNN, NCCL, nvrtc, and nvcc for FlashInfer's JIT); the
# node's NVIDIA container toolkit mounts the driver. A CUDA base would add a second, unused
# copy of CUDA, and its Ubuntu 24.04 ships Python 3.12, not the 3.11 of the CPU image; Ray needs
# the same Python on the trainer/scorer drivers and on every node of their clusters.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG TORCH_VARIANT=cu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT
# ml: torch, transformers, peft (GenRM, training, the transformers rationale engine);
# ray: Ray Train (trainer) and Ray Serve (scorer). The experts do not run here.
ARG EXTRAS=ml,ray
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml ./
COPY docker/gpu-pins.txt ./docker/
# The constraints this image installs with (image-constraints.txt). cu: drop constraints.txt's
# line for every package gpu-pins.txt names and for the CUDA wheels torch 2.15 pulls (nvidia-*,
# cuda-*, triton: torch 2.14 brings its own), then append gpu-pins.txt.
# hadolint ignore=DL4006
RUN set -eu; \
    case "$TORCH_VARIANT" in \
      cu) names="$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' docker/gpu-pins.txt | paste -sd '|' -)"; \
          test -n "$names"; \
          grep -v -i -E "^(${names}|triton|nvidia-[a-z0-9_.-]+|cuda-[a-z0-9_.-]+)==" constraints.txt > image-constraints.txt; \
          cat docker/gpu-pins.txt >> image-constraints.txt ;; \
      cpu) cp constraints.txt image-constraints.txt ;; \
      *) echo "TORCH_VARIANT must be cu or cpu, not '$TORCH_VARIANT'" >&2; exit 1 ;; \
    esac
RUN python -m venv /opt/venv \
 && pip install -c image-constraints.txt "pip==25.3" "setuptools==80.9.0" "wheel==0.48.0"
# cpu: torch first, from the CPU wheel index; 2.15.0+cpu satisfies torch==2.15.0, so the PyPI
# install below keeps it.
RUN if [ "$TORCH_VARIANT" = cpu ]; then \
      pip install -c image-constraints.txt --extra-index-url "$TORCH_CPU_INDEX" \
        "torch==$(sed -n 's/^torch==//p' image-constraints.txt)+cpu"; \
    fi
# The dependencies from pyproject.toml's lists (not from the sources), so this layer is reused
# when only the code changes; cu adds vllm (its version comes from gpu-pins.txt).
RUN python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [r for e in sys.argv[1].split(",") for r in p["optional-dependencies"][e]]))' \
      "$EXTRAS" > requirements.txt \
 && if [ "$TORCH_VARIANT" = cu ]; then echo vllm >> requirements.txt; fi \
 && pip install -c image-constraints.txt -r requirements.txt
# The project itself: build its wheel, install it without touching the pinned dependencies,
# check the whole set.
COPY README.md setup.py ./
COPY shared ./shared
COPY services ./services
COPY operators ./operators
RUN pip wheel --no-deps --no-build-isolation -w /wheels . \
 && pip install --no-deps /wheels/vlgenrm-*.whl \
 && pip check

FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_VARIANT
LABEL org.opencontainers.image.title="vlgenrm-gpu" \
      org.opencontainers.image.description="vlgenrm: trainer, rationale (vLLM) and scorer; a KubeRay node image" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.vlgenrm.torch-variant="${TORCH_VARIANT}"
# wget (with bash, already in the base): KubeRay's liveness/readiness probes. gcc and libc6-dev
# (cu): Triton compiles its launcher stubs at run time for vLLM's kernels.
# Debian's versions are not pinned: a point release removes the old ones from the archive.
# hadolint ignore=DL3008,SC2086
RUN set -eu; \
    pkgs="wget"; \
    if [ "$TORCH_VARIANT" = cu ]; then pkgs="$pkgs gcc libc6-dev"; fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 vlgenrm \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/vlgenrm --shell /bin/bash vlgenrm
# Root-owned and read-only for the service user: nothing installs at run time.
COPY --from=build /opt/venv /opt/venv
# KubeRay starts Ray with `bash -lc`, and a login shell resets PATH from /etc/profile: put the
# venv (ray, serve, python, vlgenrm) back in front there too.
# hadolint ignore=SC2016
RUN echo 'export PATH="/opt/venv/bin:$PATH"' > /etc/profile.d/vlgenrm-venv.sh
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/vlgenrm \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/matplotlib \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    FLASHINFER_WORKSPACE_BASE=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba \
    RAY_USAGE_STATS_ENABLED=0 \
    VLLM_NO_USAGE_STATS=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /home/vlgenrm
# uid:gid 1000:1000 is vlgenrm; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# The chart sets the command per Deployment; KubeRay sets its own (ray start ...).
CMD ["vlgenrm", "--help"]
