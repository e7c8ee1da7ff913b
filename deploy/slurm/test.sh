#!/usr/bin/env bash
# Tests crossfold-workers.sbatch without Slurm: runs it with bash under a fake
# Slurm environment, with CROSSFOLD_WORKER pointing at a fake worker (made
# here in a temporary folder) that records its arguments and exits on
# SIGTERM. Checks that one worker starts per GPU on cuda:0..n-1, that a
# SIGTERM (or SIGINT) to the batch shell reaches every worker, that the script
# exits 0 when the workers exit 0 and non-zero when one fails, that it refuses
# to start without GPUs, and that no token appears on any command line.
# Needs bash and coreutils only; takes a few seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/crossfold-workers.sbatch"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/crossfold-slurm-test.XXXXXX")"
batch_pid=""
cleanup() {
  if [ -n "$batch_pid" ] && kill -0 "$batch_pid" 2>/dev/null; then
    kill -KILL "$batch_pid" 2>/dev/null || true
  fi
  local f
  for f in "$tmp"/run*/pid.*; do
    [ -e "$f" ] || continue
    kill -KILL "${f##*.}" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
checks=0
ok() { checks=$((checks + 1)); printf '  ok   %s\n' "$*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); printf '  FAIL %s\n' "$*"; }
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

# The fake worker: records its pid and arguments, then runs until SIGTERM and
# exits with FAKE_EXIT_ON_TERM (default 0).
cat >"$tmp/fake-worker" <<'EOF'
#!/usr/bin/env bash
dir="$FAKE_DIR"
printf '%s\n' "$@" >"$dir/args.$$"
trap 'echo TERM >>"$dir/term.$$"; exit "${FAKE_EXIT_ON_TERM:-0}"' TERM
touch "$dir/pid.$$"
while :; do sleep 0.05; done
EOF
chmod +x "$tmp/fake-worker"

token="tok-$RANDOM$RANDOM-do-not-show"
printf '%s\n' "$token" >"$tmp/worker.token"
chmod 600 "$tmp/worker.token"
printf 'not a real certificate\n' >"$tmp/ca.pem"

# run_batch NAME SIGNAL [VAR=VALUE ...]: runs the batch script in a fake
# two-GPU allocation (unless the variables say otherwise), waits for its
# workers, sends SIGNAL to the batch shell and waits for it to exit. Sets
# run_dir and batch_rc.
run_batch() {
  local name=$1 signal=$2
  shift 2
  run_dir="$tmp/$name"
  mkdir -p "$run_dir"
  local -a env_args=(
    SLURM_JOB_ID=4242 SLURMD_NODENAME=node7 SLURM_GPUS_ON_NODE=2
    "SLURM_JOB_GPUS=2,3" "CUDA_VISIBLE_DEVICES=0,1"
    CROSSFOLD_COORDINATOR=https://coordinator.invalid:50051
    CROSSFOLD_WORKER="$tmp/fake-worker" CROSSFOLD_TOKEN_FILE="$tmp/worker.token"
    CROSSFOLD_CA="$tmp/ca.pem" CROSSFOLD_CACHE="$run_dir/cache"
    FAKE_DIR="$run_dir" TMPDIR="$run_dir"
    "$@"
  )
  # A background job of this shell starts with SIGINT ignored; give the
  # batch shell the default disposition back, as a real one has.
  local -a launcher=(env)
  if env --default-signal=INT true 2>/dev/null; then
    launcher=(env --default-signal=INT)
  fi
  "${launcher[@]}" -u CROSSFOLD_TOKEN "${env_args[@]}" bash "$script" >"$run_dir/batch.log" 2>&1 &
  batch_pid=$!
  local want=${EXPECT_WORKERS:-2} n=0 _
  for _ in $(seq 200); do
    n=$(find "$run_dir" -maxdepth 1 -name 'pid.*' | wc -l)
    [ "$n" -ge "$want" ] && break
    kill -0 "$batch_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ "$want" -gt 0 ] && [ "$n" -ge "$want" ]; then
    sleep 0.2   # let the batch shell reach `wait`
    kill -s "$signal" "$batch_pid" 2>/dev/null || true
  fi
  for _ in $(seq 200); do
    kill -0 "$batch_pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$batch_pid" 2>/dev/null; then
    echo "  batch script still running 10 s after SIG$signal; killing it" >&2
    kill -KILL "$batch_pid" 2>/dev/null || true
  fi
  set +e
  wait "$batch_pid"
  batch_rc=$?
  set -e
  batch_pid=""
}

worker_count() { find "$run_dir" -maxdepth 1 -name 'args.*' | wc -l; }
term_count() { find "$run_dir" -maxdepth 1 -name 'term.*' | wc -l; }
devices() { grep -h -A1 -x -- --device "$run_dir"/args.* | grep -v -x -e --device -e -- | sort | tr '\n' ' '; }
no_token_in_args() { ! grep -q -F -- "$token" "$run_dir"/args.* "$run_dir/batch.log"; }
args_have() { local f; for f in "$run_dir"/args.*; do grep -q -x -F -- "$1" "$f" || return 1; done; }
arg_after() { grep -h -A1 -x -- "$1" "$run_dir"/args.* | grep -v -x -e "$1" -e -- | sort -u | wc -l; }

echo "slurm test 1: two GPUs, SIGTERM to the batch shell"
run_batch run1 TERM
check "two workers started" [ "$(worker_count)" -eq 2 ]
check "devices are cuda:0 and cuda:1" [ "$(devices)" = "cuda:0 cuda:1 " ]
check "every worker got SIGTERM" [ "$(term_count)" -eq 2 ]
check "batch script exited 0" [ "$batch_rc" -eq 0 ]
check "no token on any command line or in the log" no_token_in_args
check "token passed as --token-file" args_have "--token-file"
check "token file path follows --token-file" [ "$(grep -h -A1 -x -- --token-file "$run_dir"/args.* | grep -c -x -F -- "$tmp/worker.token")" -eq 2 ]
check "coordinator URL passed" args_have "https://coordinator.invalid:50051"
check "CA passed" args_have "$tmp/ca.pem"
check "--fetch-data passed" args_have "--fetch-data"
check "each worker has its own cache folder" [ "$(arg_after --cache)" -eq 2 ]
check "each worker has its own name" [ "$(arg_after --name)" -eq 2 ]

echo "slurm test 2: GPUs only from SLURM_JOB_GPUS (physical ids 5,7), SIGINT"
run_batch run2 INT CUDA_VISIBLE_DEVICES= SLURM_GPUS_ON_NODE= SLURM_JOB_GPUS=5,7
check "two workers started" [ "$(worker_count)" -eq 2 ]
check "devices are cuda:0 and cuda:1 (not the physical ids)" [ "$(devices)" = "cuda:0 cuda:1 " ]
check "SIGINT reached every worker as SIGTERM" [ "$(term_count)" -eq 2 ]
check "batch script exited 0" [ "$batch_rc" -eq 0 ]

echo "slurm test 3: three GPUs, workers fail on SIGTERM"
EXPECT_WORKERS=3 run_batch run3 TERM CUDA_VISIBLE_DEVICES=0,1,2 FAKE_EXIT_ON_TERM=3
check "three workers started" [ "$(worker_count)" -eq 3 ]
check "devices are cuda:0..2" [ "$(devices)" = "cuda:0 cuda:1 cuda:2 " ]
check "every worker got SIGTERM" [ "$(term_count)" -eq 3 ]
check "batch script exited non-zero" [ "$batch_rc" -ne 0 ]

echo "slurm test 4: no GPUs allocated"
EXPECT_WORKERS=0 run_batch run4 TERM CUDA_VISIBLE_DEVICES= SLURM_GPUS_ON_NODE= SLURM_JOB_GPUS=
check "no worker started" [ "$(worker_count)" -eq 0 ]
check "batch script exited non-zero" [ "$batch_rc" -ne 0 ]
check "it says why" grep -q "no GPUs allocated" "$run_dir/batch.log"

echo "slurm test 5: no coordinator URL"
EXPECT_WORKERS=0 run_batch run5 TERM CROSSFOLD_COORDINATOR=
check "no worker started" [ "$(worker_count)" -eq 0 ]
check "batch script exited non-zero" [ "$batch_rc" -ne 0 ]
check "it says why" grep -q "CROSSFOLD_COORDINATOR is not set" "$run_dir/batch.log"

if [ "$failures" -ne 0 ]; then
  for log in "$tmp"/run*/batch.log; do
    echo "--- $log"
    cat "$log"
  done
fi
echo "slurm: $((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
