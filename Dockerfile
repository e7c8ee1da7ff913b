# syntax=docker/dockerfile:1
#
# crossfold container images. Three stages; build the two images by target:
#
#   docker build --target coordinator -t crossfold-coordinator .
#   docker build --target worker      -t crossfold-worker .
#
# (or `docker compose build`). BuildKit is required (cache mounts); it is the
# default builder of current Docker releases.
#
#   builder      Rust toolchain + libtorch from PyPI (torch==2.11.0 with its
#                CUDA 13 wheels, installed by scripts/setup-libtorch.sh exactly
#                as `make` does), then `cargo build --release --workspace`.
#   coordinator  debian slim + the `crossfold` binary only (the CLI and the
#                coordinator do not link libtorch): no Python, no libtorch.
#   worker       debian slim + `crossfold-worker` + the shared libraries of the
#                torch and nvidia-* wheels (no Python: the worker only needs
#                the .so files). The CUDA user-space libraries come from those
#                wheels; the NVIDIA driver comes from the host through the
#                NVIDIA Container Toolkit, so no nvidia/cuda base image is
#                needed. CUDA 13 needs a host driver of the 580 series or newer.
#
# Both runtime images run as the unprivileged user `crossfold` (uid/gid 10001).
# See deploy/README.md; the images have not been built on the development
# machine (it has no Docker engine).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- builder ---
FROM ${RUST_IMAGE} AS builder
# bash, not the image's /bin/sh (dash): scripts/env.sh uses BASH_SOURCE.
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# libtorch first, in its own layer, so that the ~4.6 GB wheel download is
# repeated only when these two scripts change.
COPY scripts/setup-libtorch.sh scripts/env.sh scripts/
RUN CROSSFOLD_TORCH=cuda bash scripts/setup-libtorch.sh

# The sources (.dockerignore keeps target/, .venv*, out/, .git and secrets/
# out of the build context). Without .git the binaries report their git
# commit as "unknown".
COPY . .
# `docker build --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD) ...`
# records the commit in the worker's provenance (.git is not in the context).
ARG GIT_COMMIT=unknown
ENV CROSSFOLD_GIT_COMMIT=${GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    . scripts/env.sh \
 && cargo build --release --workspace --locked \
 && mkdir -p /out/bin \
 && cp target/release/crossfold target/release/crossfold-worker /out/bin/

# The run-time libraries of the worker, with the site-packages layout kept
# (torch/lib next to nvidia/): libtorch_cuda.so finds the CUDA, cuDNN, NCCL,
# ... libraries through its RPATH $ORIGIN/../../nvidia/*/lib. Headers are
# dropped.
RUN site="$(ls -d /src/.venv/lib/python3*/site-packages)" \
 && mkdir -p /out/site-packages/torch \
 && cp -a "$site/torch/lib" /out/site-packages/torch/lib \
 && cp -a "$site/nvidia" /out/site-packages/nvidia \
 && find /out/site-packages/nvidia -depth -type d -name include -exec rm -rf {} + \
 && test -f /out/site-packages/torch/lib/libtorch_cuda.so

# ------------------------------------------------------------ coordinator ---
FROM ${RUNTIME_IMAGE} AS coordinator
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 crossfold \
 && useradd --system --uid 10001 --gid crossfold --no-create-home \
      --home-dir /var/lib/crossfold --shell /usr/sbin/nologin crossfold \
 && mkdir -p /var/lib/crossfold /data \
 && chown crossfold:crossfold /var/lib/crossfold
COPY --from=builder /out/bin/crossfold /usr/local/bin/crossfold
USER 10001:10001
WORKDIR /var/lib/crossfold
# 50051: gRPC (Experiments, Workers, Data, grpc.health.v1, reflection)
# 9464: Prometheus metrics (when started with --metrics-listen)
EXPOSE 50051 9464
ENTRYPOINT ["crossfold"]
# The coordinator's arguments (TLS files, tokens file, data root) come from
# docker-compose.yml or the Kubernetes manifests; see deploy/README.md.
CMD ["coordinator", "--help"]

# ----------------------------------------------------------------- worker ---
FROM ${RUNTIME_IMAGE} AS worker
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 crossfold \
 && useradd --system --uid 10001 --gid crossfold --no-create-home \
      --home-dir /var/cache/crossfold --shell /usr/sbin/nologin crossfold \
 && mkdir -p /var/cache/crossfold \
 && chown crossfold:crossfold /var/cache/crossfold
COPY --from=builder /out/site-packages /opt/crossfold/site-packages
COPY --from=builder /out/bin/crossfold-worker /usr/local/bin/crossfold-worker
# The binary's RUNPATH points at the builder's .venv, which is not here:
# LD_LIBRARY_PATH finds libtorch (and, besides the torch libraries' own
# RPATH, the folders of the nvidia-* wheels that RPATH names), and
# CROSSFOLD_TORCH_LIB tells the worker where to load libtorch_cuda.so from.
# NVIDIA_DRIVER_CAPABILITIES asks the NVIDIA Container Toolkit for the compute
# libraries of the driver; which GPUs are visible is left to the runtime
# (compose device reservations, the Kubernetes device plugin), not set here.
ENV LD_LIBRARY_PATH=/opt/crossfold/site-packages/torch/lib:/opt/crossfold/site-packages/nvidia/cu13/lib:/opt/crossfold/site-packages/nvidia/cudnn/lib:/opt/crossfold/site-packages/nvidia/nccl/lib:/opt/crossfold/site-packages/nvidia/nvshmem/lib:/opt/crossfold/site-packages/nvidia/cusparselt/lib \
    CROSSFOLD_TORCH_LIB=/opt/crossfold/site-packages/torch/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/var/cache/crossfold
USER 10001:10001
WORKDIR /var/cache/crossfold
EXPOSE 9465
ENTRYPOINT ["crossfold-worker"]
# Without arguments: list the devices the worker sees and run a check
# computation on each (`docker run --rm --gpus all crossfold-worker`).
CMD ["devices", "--check"]
