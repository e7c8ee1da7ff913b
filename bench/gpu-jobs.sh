#!/usr/bin/env bash
# Where a job's time goes on a GPU, beyond bench/gpu.sh (same bundle: build
# here with `make gpu-bundle`, carry target/release/{crossfold,crossfold-worker}):
#
#   bench/gpu-jobs.sh OUT_DIR
#
# 1. Step time by batch (16, 32, 64, 128) at the default precision, and at
#    batch 32 in TF32 too, each twice: a step time that does not grow with
#    the batch means the step waits on the CPU launching kernels, not on
#    the GPU.
# 2. Screening rounds as a new `crossfold-worker train` process (rounds 1
#    and 2) and inside a running worker (`crossfold run` of the screening
#    task, rounds 1-5), ROUNDS times, each preceded by the batch-32 SGD
#    benchmark, and the benchmark once more at the end: the benchmark's own
#    drift between readings says how far a whole-job ratio can be trusted.
# Every measurement is taken for each `train.cuda_graph` setting in GRAPHS
# (default "off"; "off on" compares eager steps with steps replayed from a
# CUDA graph, interleaved). FRESH=0 leaves out the new-process rounds.
# Writes OUT_DIR/summary.txt and each run's outputs (checkpoints deleted).
# Settings (environment): PYTHON (python3), BIN (target/release), ROUNDS (2),
# GRAPHS ("off"), FRESH (1), PASSES (2: passes of part 1), BATCHES
# ("16 32 64 128": part 1's batches), TF32 (1: part 1 also at batch 32 in TF32).
# With graphs on, every line says how many steps were replayed (a run that
# fell back to eager steps says so, and why).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${1:?usage: bench/gpu-jobs.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=${BIN:-target/release}
py=${PYTHON:-python3}
start=$SECONDS
log() { echo "[$((SECONDS - start))s] $*" | tee -a "$out/summary.txt"; }
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || {
  log "no PyTorch under $py"
  exit 1
}
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
gpu() { log "gpu: $(nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv,noheader)"; }

graphs=${GRAPHS:-off}

bench() { # batch, precision, cuda graph
  local r
  r=$(timeout 60 "$bin/crossfold-worker" bench --arch resnet34 --size 224 --batch "$1" --steps 100 \
    --threads 8 --device cuda --precision "$2" --channels-last auto --fused-optimizer auto \
    --cudnn-benchmark auto --cuda-graph "${3:-off}" --optimizer sgd 2>>"$out/bench.err" | tail -1)
  "$py" - "$r" "$2" "${3:-off}" <<'PY' | tee -a "$out/summary.txt"
import json, sys
try:
    d = json.loads(sys.argv[1])
except ValueError:
    print("benchmark failed: see bench.err"); sys.exit()
try:
    b, rate = d["batch"], d["images_per_second"]
except (KeyError, TypeError):
    print("benchmark output without a rate:", sys.argv[1][:200]); sys.exit()
note = ""
if sys.argv[3] != "off":
    replays = d.get("graph_replays")
    note = f", {replays} replays" if replays else ", NO REPLAYS"
    if d.get("graph_fallback"):
        note += f" (fallback: {d['graph_fallback']})"
print(f"bench batch {b:>3} {sys.argv[2]:<4} graph={sys.argv[3]:<3} sgd: {rate:7.0f} img/s, "
      f"{1000 * b / rate:6.2f} ms per step{note}")
PY
}

fresh() { # round, run, cuda graph
  local d="$out/train-r$1-$2-graph-$3"
  timeout 90 "$bin/crossfold-worker" train --spec examples/paper.toml --task screening --round "$1" \
    --set train.device=cuda --set "train.cuda_graph=$3" --out "$d" >"$d.log" 2>&1
  "$py" - "$d/result.json" "$1 graph=$3" <<'PY' | tee -a "$out/summary.txt"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    t = r["timing_seconds"]
    p = r.get("provenance", {})
    line = (f"new train process   screening {sys.argv[2]}: total {t['total']:.2f} s, "
            f"training {t['training']:.2f} s at {r['images_per_second']:.0f} img/s, "
            f"{p.get('cuda_graph_replays', 0)} replays")
    if p.get("cuda_graph_fallback"):
        line += f" (fallback: {p['cuda_graph_fallback']})"
except (OSError, ValueError, KeyError, TypeError) as e:
    line = f"new train process   screening {sys.argv[2]}: no result: {e!r}"
print(line)
PY
}

in_worker() { # run, cuda graph
  local d="$out/run-$1-graph-$2"
  timeout 150 "$bin/crossfold" run examples/paper.toml --quiet --out "$d" --set train.device=cuda \
    --set 'protocol.tasks=["screening"]' --set "train.cuda_graph=$2" >"$d.log" 2>&1
  log "crossfold run (screening only, graph=$2): exit $?"
  "$py" - "$d/rounds.csv" "$2" "$d/report.json" <<'PY' | tee -a "$out/summary.txt"
import csv, json, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError as e:
    print("no rounds:", e); sys.exit()
graph = {}
try:
    for j in json.load(open(sys.argv[3])).get("predictions", []):
        p = j.get("provenance") or {}
        graph[(j.get("task"), str(j.get("round")))] = (
            p.get("cuda_graph_replays", 0), p.get("cuda_graph_fallback"))
except (OSError, ValueError, AttributeError) as e:
    print("no report.json:", e)
for r in rows:
    try:
        replays, fallback = graph.get((r["task"], r["round"]), ("?", None))
        note = f", {replays} replays" + (f" (fallback: {fallback})" if fallback else "")
        print(f"in a running worker graph={sys.argv[2]} {r['task']} {r['round']}: total {float(r['seconds']):.2f} s, "
              f"training {float(r['training_seconds']):.2f} s at {float(r['images_per_second']):.0f} img/s{note}")
    except (KeyError, ValueError) as e:
        print(f"in a running worker {r.get('task')} {r.get('round')}: no timing ({e!r})")
PY
}

gpu
log "1. step time by batch"
for _ in $(seq 1 "${PASSES:-2}"); do
  for b in ${BATCHES:-16 32 64 128}; do
    for g in $graphs; do bench "$b" auto "$g"; done
  done
  if [ "${TF32:-1}" = 1 ]; then
    for g in $graphs; do bench 32 tf32 "$g"; done
  fi
done
"$bin/crossfold" plan examples/paper.toml >/dev/null 2>&1 || log "crossfold plan examples/paper.toml failed"
log "2. screening rounds: new process against a running worker"
for i in $(seq 1 "${ROUNDS:-2}"); do
  for g in $graphs; do
    gpu
    bench 32 auto "$g"
    if [ "${FRESH:-1}" = 1 ]; then
      fresh 1 "$i" "$g"
      fresh 2 "$i" "$g"
    fi
    in_worker "$i" "$g"
  done
done
for g in $graphs; do bench 32 auto "$g"; done
gpu
find "$out" -name '*.safetensors' -delete
log "done"
