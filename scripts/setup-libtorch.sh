#!/usr/bin/env bash
# Installs libtorch (PyTorch 2.11.0, the version tch 0.24 needs) from PyPI into
# .venv/ at the repository root. A no-op when it is already there.
#
# Which wheel set:
#   - on a machine with an NVIDIA driver (nvidia-smi works), or with
#     CROSSFOLD_TORCH=cuda: the full `torch==2.11.0` with its CUDA 13 wheels
#     (~4.6 GB installed), so the worker trains on the GPU;
#   - otherwise (CROSSFOLD_TORCH=cpu or no driver): `torch==2.11.0 --no-deps`
#     plus the two CUDA libraries that libtorch_cpu.so itself links against
#     (cudart, cupti: 13 MB), ~1.3 GB in all. libtorch_cuda.so is present but
#     never loaded, so nothing else is needed to train on the CPU.
# Builds then use LIBTORCH=<venv>/.../site-packages/torch (scripts/env.sh);
# LIBTORCH_USE_PYTORCH=1 is not used because `import torch` needs the full
# wheel set.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv"
torch_version="2.11.0"
mode="${CROSSFOLD_TORCH:-}"
if [ -z "$mode" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    mode=cuda
  else
    mode=cpu
  fi
fi
case "$mode" in cpu|cuda) ;; *) echo "CROSSFOLD_TORCH must be cpu or cuda, not '$mode'" >&2; exit 2;; esac
stamp="$venv/.crossfold-torch-$torch_version-$mode"
# The CUDA runtime's crt/ headers, which libtorch's CUDA headers include:
# worker/build.rs needs them to build the CUDA-graph library
# (worker/shim/graph.cpp). Headers only, 170 kB; checked on their own so
# that a .venv made before they were needed gets them too.
headers_stamp="$venv/.crossfold-cuda-crt-13.0"
torch_done=0
if [ -f "$stamp" ]; then
  torch_done=1
elif [ "$mode" = cpu ] && [ -f "$venv/.crossfold-torch-$torch_version-cuda" ]; then
  torch_done=1   # the full install serves CPU work too
fi
if [ "$torch_done" = 1 ] && [ -f "$headers_stamp" ]; then
  exit 0
fi
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup-libtorch: $python not found; install Python 3.10+ with venv and pip" >&2
  exit 1
fi
[ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
if [ "$torch_done" = 0 ]; then
  echo "setup-libtorch: installing torch==$torch_version ($mode) into $venv" >&2
  if [ "$mode" = cuda ]; then
    "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "torch==$torch_version"
  else
    "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check --no-deps \
      "torch==$torch_version" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
fi
if [ ! -f "$headers_stamp" ]; then
  "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check --no-deps \
    nvidia-cuda-crt==13.0.88
  touch "$headers_stamp"
fi
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ ! -f "$site/torch/lib/libtorch_cpu.so" ]; then
  echo "setup-libtorch: $site/torch/lib/libtorch_cpu.so missing after install" >&2
  exit 1
fi
touch "$stamp"
