#!/usr/bin/env bash
# Training throughput: crossfold's training loop against the PyTorch
# reference (bench/reference.py), same network, image size, batch, optimiser
# (AdamW), precision (fp32) and thread count, measured in the same run.
# Prints images/s for each and the ratio crossfold / PyTorch.
#
#   bench/run.sh                      # CPU, 2 threads, ResNet34, 64 and 128 px
#   DEVICE=cuda SIZES=224 BATCH=64 bench/run.sh
#
# Settings (environment): ARCH (resnet34), SIZES ("64 128"), BATCH (32),
# STEPS (20), THREADS (2), DEVICE (cpu | cuda), PYTHON (a python whose
# `import torch` gives 2.11.0; default: .venv-bench, created with the full
# torch wheel set when missing), CROSSFOLD_WORKER (the worker binary;
# default: built in release mode).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${ARCH:-resnet34}
sizes=${SIZES:-"64 128"}
batch=${BATCH:-32}
steps=${STEPS:-20}
threads=${THREADS:-2}
device=${DEVICE:-cpu}

py=${PYTHON:-}
if [ -z "$py" ]; then
  py=.venv-bench/bin/python
  if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "bench: installing the full torch==2.11.0 wheel set into .venv-bench (about 4.6 GB, once)" >&2
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install --quiet --disable-pip-version-check torch==2.11.0
  fi
fi
"$py" -c 'import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith("2.11.0") else "reference torch is " + v + ", not 2.11.0")'

bin=${CROSSFOLD_WORKER:-}
if [ -z "$bin" ]; then
  bash scripts/setup-libtorch.sh
  # shellcheck disable=SC1091
  . scripts/env.sh
  cargo build --release -q -p crossfold-worker
  bin=target/release/crossfold-worker
fi

field() { python3 -c "import json, sys; print(json.loads(sys.stdin.read())['$1'])"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
[ "$device" = cpu ] || nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || true
printf '%-9s %5s %5s %7s %14s %14s %7s\n' arch size batch threads crossfold_img/s pytorch_img/s ratio
for size in $sizes; do
  ours=$("$bin" bench --arch "$arch" --size "$size" --batch "$batch" --steps "$steps" --threads "$threads" --device "$device" 2>/dev/null)
  ref=$("$py" -W ignore bench/reference.py --arch "$arch" --size "$size" --batch "$batch" --images $((steps * batch)) \
        --steps "$steps" --warmup "$steps" --threads "$threads" --device "$device")
  o=$(echo "$ours" | field images_per_second)
  r=$(echo "$ref" | field images_per_second)
  ratio=$(python3 -c "print(f'{$o / $r:.3f}')")
  printf '%-9s %5s %5s %7s %14.1f %14.1f %7s\n' "$arch" "$size" "$batch" "$threads" "$o" "$r" "$ratio"
done
