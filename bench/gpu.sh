#!/usr/bin/env bash
# Every GPU check in one run, for a GPU machine that has PyTorch 2.11.0 but
# no cargo (build here with `make gpu-bundle`, carry target/release/crossfold,
# target/release/crossfold-worker and target/release/crossfold-gpu-tests):
#
#   bench/gpu.sh OUT_DIR
#
# 1. `crossfold-worker devices --check` (libtorch_cuda loaded, CUDA works),
#    then the GPU tests (worker/tests/gpu.rs: every precision and layout
#    trains, provenance, GPU and CPU scores agree);
# 2. training throughput at 224 px, batch 64, ResNet34: PyTorch
#    (bench/reference.py) in its four configurations (fp32 = TF32 on CUDA, or
#    bf16 autocast; NCHW or channels-last) and crossfold in several, all in
#    this one run;
# 3. one whole job (screening round 1 of examples/paper.toml at its full GPU
#    size) with its time split into start-up, data, training, evaluation;
# 4. the whole paper experiment (`crossfold run examples/paper.toml`), then,
#    time allowing, a variant of it (RUN_VARIANT="--set key=value ...").
# Writes OUT_DIR/{summary.txt,bench.jsonl,...} and prints a table.
# Settings (environment): PYTHON (python3), BIN (target/release), STEPS (30),
# DEADLINE (seconds after which optional steps are skipped; 330), BENCH
# (full: every configuration; short: crossfold's default and PyTorch's best;
# tune: TF32 channels-last with and without cuDNN autotuning on both sides),
# JOB_VARIANT and RUN_VARIANT ("--set key=value ..." for a second job / run).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/gpu.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=${BIN:-target/release}
py=${PYTHON:-python3}
steps=${STEPS:-30}
batch=64
deadline=${DEADLINE:-330}
start=$SECONDS
log() { echo "[$((SECONDS - start))s] $*" | tee -a "$out/summary.txt"; }
late() { [ $((SECONDS - start)) -gt "$deadline" ]; }

torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || {
  log "no PyTorch under $py"
  exit 1
}
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
log "torch $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)'), lib $torch_lib"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/summary.txt"
log "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

# 1. Devices.
timeout 60 "$bin/crossfold-worker" devices --check >"$out/devices.txt" 2>&1
log "devices --check: exit $?"
cat "$out/devices.txt" | tee -a "$out/summary.txt"

if [ -x "$bin/crossfold-gpu-tests" ]; then
  timeout 300 "$bin/crossfold-gpu-tests" --ignored --test-threads 1 --nocapture >"$out/gpu-tests.txt" 2>&1
  log "gpu tests: exit $? ($(grep -E '^test result' "$out/gpu-tests.txt" | tail -1))"
  grep -E '^test |img/s|capability|panicked' "$out/gpu-tests.txt" | tee -a "$out/summary.txt"
else
  log "no $bin/crossfold-gpu-tests: build it here with make gpu-bundle"
fi

# 2. Throughput.
field() { "$py" -c "import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
bench_ref() { # precision, channels-last flag, [cuDNN autotuning on|off, default on]
  local r tune=${3:-on}
  r=$(timeout 120 "$py" -W ignore bench/reference.py --arch resnet34 --size 224 --batch "$batch" \
    --images $((steps * batch)) --steps "$steps" --warmup "$steps" --threads 8 --device cuda \
    --precision "$1" $2 --cudnn-benchmark "$tune" 2>>"$out/bench.err") || { log "reference $1 $2 failed"; return; }
  echo "$r" >>"$out/bench.jsonl"
  printf '%-10s %-6s %-4s %-6s %-5s %10.1f\n' pytorch "$1" "${2:+on}" - "$tune" "$(echo "$r" | field images_per_second)" | tee -a "$out/summary.txt"
}
bench_ours() { # precision, channels-last, fused, [cuDNN autotuning, default auto]
  local r tune=${4:-auto}
  r=$(timeout 120 "$bin/crossfold-worker" bench --arch resnet34 --size 224 --batch "$batch" --steps "$steps" \
    --device cuda --precision "$1" --channels-last "$2" --fused-optimizer "$3" --cudnn-benchmark "$tune" \
    2>>"$out/bench.err") ||
    { log "crossfold $1 $2 $3 $tune failed: $(tail -3 "$out/bench.err")"; return; }
  echo "$r" >>"$out/bench.jsonl"
  printf '%-10s %-6s %-4s %-6s %-5s %10.1f\n' crossfold "$1" "$2" "$3" "$tune" "$(echo "$r" | field images_per_second)" | tee -a "$out/summary.txt"
}
log "throughput, ResNet34, 224 px, batch 64, AdamW, $steps timed steps (img/s)"
printf '%-10s %-6s %-4s %-6s %-5s %10s\n' impl prec CL fused tune img/s | tee -a "$out/summary.txt"
if [ "${BENCH:-full}" = full ]; then
  bench_ours auto auto auto
  bench_ref fp32 ""
  bench_ref fp32 --channels-last
  bench_ref bf16 ""
  bench_ref bf16 --channels-last
  bench_ours tf32 on on
  bench_ours bf16 on on
  bench_ours bf16 on off
  bench_ours tf32 on off
  bench_ours tf32 off off
  bench_ours bf16 off on
  bench_ref fp16 --channels-last
  bench_ours fp16 on on
  bench_ours auto auto auto
elif [ "${BENCH}" = tune ]; then
  # Same configuration with and without cuDNN autotuning on both sides,
  # twice, alternating, to tell a real difference from machine noise.
  for _ in 1 2; do
    bench_ref fp32 --channels-last on
    bench_ours tf32 on on on
    bench_ours auto auto auto
    bench_ref fp32 --channels-last off
    bench_ours tf32 on on off
    bench_ours auto auto auto on
  done
else
  bench_ref fp32 --channels-last
  bench_ours auto auto auto
fi
# The spec's batch size (32): the rate a job's pure training time is measured against.
batch=32
log "throughput at batch $batch"
bench_ours auto auto auto
bench_ref fp32 --channels-last
batch=64

# 3. One whole job at the spec's GPU settings (and variants: JOBS holds
# name=--set pairs separated by spaces; "default" has no --set).
one_job() { # name, extra args
  log "whole job $1: screening round 1, examples/paper.toml $2"
  # shellcheck disable=SC2086
  timeout 180 "$bin/crossfold-worker" train --spec examples/paper.toml --task screening --round 1 \
    --out "$out/job-$1" $2 >"$out/job-$1.log" 2>&1
  log "train exit $?: $(tail -1 "$out/job-$1.log")"
  "$py" - "$out/job-$1" <<'EOF' | tee -a "$out/summary.txt"
import json, os, sys
d = sys.argv[1]
try:
    r = json.load(open(os.path.join(d, "result.json")))
    m = json.load(open(os.path.join(d, "metrics.json")))
    h = [l.split(",") for l in open(os.path.join(d, "history.csv")).read().split()[1:]]
except Exception as e:
    print("no result:", e); sys.exit()
print("timing_seconds:", json.dumps(r.get("timing_seconds")))
print("train images/s:", r.get("images_per_second"), "n_fit:", r.get("n_fit"), "best epoch:", r.get("best_epoch"), "stopped early:", r.get("stopped_early"))
print("epoch seconds: first", h[0][5], "then", " ".join(f"{float(x[5]):.3f}" for x in h[1:]))
print("compute:", json.dumps(r.get("provenance", {}).get("compute")), "deterministic:", r.get("provenance", {}).get("deterministic_algorithms"))
print("test AUC:", m["at_threshold"]["auc"])
EOF
  ls "$out/job-$1" | tr '\n' ' '; echo
  rm -f "$out/job-$1/model.safetensors"
}
one_job default ""
if [ -n "${JOB_VARIANT:-}" ]; then one_job variant "$JOB_VARIANT"; fi

# 4. The whole experiment, then a lower learning rate.
run_paper() { # name, extra args
  late && { log "skipped $1 (past ${deadline}s)"; return; }
  log "crossfold run examples/paper.toml $2"
  # shellcheck disable=SC2086
  timeout 200 "$bin/crossfold" run examples/paper.toml --quiet --out "$out/$1" $2 >"$out/$1.log" 2>&1
  log "run $1 exit $?"
  tail -40 "$out/$1.log" | tee -a "$out/summary.txt"
  find "$out/$1" -name '*.safetensors' -delete 2>/dev/null
}
run_paper paper ""
if [ -n "${RUN_VARIANT:-}" ]; then run_paper paper-variant "$RUN_VARIANT"; fi
log "done"
