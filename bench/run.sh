#!/usr/bin/env bash
# Training throughput: crossfold's training loop against the PyTorch
# reference (bench/reference.py), same network, image size, batch, optimiser
# (AdamW), precision (fp32) and thread count, measured in the same run.
# Prints images/s for each and the ratios crossfold / PyTorch in its default
# configuration (`ratio`) and crossfold / PyTorch's best measured variant
# (`ratio_best`, the like-for-like figure: crossfold runs with its own
# defaults, a fused optimiser step and, from 128 px, channels-last).
#
#   bench/run.sh                      # CPU, 2 threads, ResNet34, 64 and 128 px
#   DEVICE=cuda SIZES=224 BATCH=64 bench/run.sh
#
# Settings (environment): ARCH (resnet34), SIZES ("64 128"), BATCH (32),
# STEPS (20), THREADS (2), DEVICE (cpu | cuda), REPEAT (3), PYTHON (a python whose
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

field() { python3 -c "import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
[ "$device" = cpu ] || nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || true
repeat=${REPEAT:-3}
# PyTorch runs in its default configuration (NCHW, torch.optim.AdamW's
# default per-parameter implementation) and in the variants that can be
# faster (fused AdamW, channels-last); every configuration runs REPEAT
# times, alternating, and the median counts.
ref_configs=("" "--fused" "--channels-last --fused")
echo "img/s: median of $repeat alternating runs (each run: $steps warm-up and $steps timed steps)"
printf '%-9s %5s %5s %7s %11s %9s %13s %16s %13s %13s\n' arch size batch threads crossfold pytorch pytorch-fused pytorch-cl-fused ratio ratio_best
for size in $sizes; do
  declare -a ours=() r0=() r1=() r2=()
  for _ in $(seq "$repeat"); do
    o=$("$bin" bench --arch "$arch" --size "$size" --batch "$batch" --steps "$steps" --threads "$threads" \
      --device "$device" --log-format text 2>/dev/null | field images_per_second)
    ours+=("$o")
    for k in 0 1 2; do
      # shellcheck disable=SC2086
      r=$("$py" -W ignore bench/reference.py --arch "$arch" --size "$size" --batch "$batch" \
        --images $((steps * batch)) --steps "$steps" --warmup "$steps" --threads "$threads" \
        --device "$device" ${ref_configs[$k]} 2>/dev/null | field images_per_second)
      case $k in 0) r0+=("$r") ;; 1) r1+=("$r") ;; 2) r2+=("$r") ;; esac
    done
  done
  mo=$(median "${ours[@]}"); m0=$(median "${r0[@]}"); m1=$(median "${r1[@]}"); m2=$(median "${r2[@]}")
  python3 - "$arch" "$size" "$batch" "$threads" "$mo" "$m0" "$m1" "$m2" <<'PY'
import sys
arch, size, batch, threads = sys.argv[1:5]
o, r0, r1, r2 = map(float, sys.argv[5:9])
print(f"{arch:<9} {size:>5} {batch:>5} {threads:>7} {o:11.1f} {r0:9.1f} {r1:13.1f} {r2:16.1f} {o / r0:13.3f} {o / max(r0, r1, r2):13.3f}")
PY
  echo "  runs: crossfold ${ours[*]} | pytorch ${r0[*]} | fused ${r1[*]} | cl-fused ${r2[*]}"
done
