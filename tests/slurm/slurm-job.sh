#!/bin/sh
# The fusion job on a real (local, one-node) Slurm: starts munged, slurmctld and slurmd
# (local-slurm.sh), runs a small job with training: {ranks: 2} through fusectl slurm, with no
# merge worker at up (the scaler in 'fusectl slurm wait' must add one) and the train worker's
# Slurm job cancelled while it trains (preemption: the task must be leased again by the train
# allocation the scaler submits), checks the merged model has the same bytes as
# `fusectl run --local` of the same job, and that
# bad cluster sections fail with a message saying what to change. Prints the time from
# fusectl slurm up to the first leased task.
# Usage: slurm-job.sh BUILD_DIR   (needs the slurm packages: FUSECHAT_SETUP_SLURM=1 tools/setup.sh)
set -u
# Under ASan the training ranks need the full unwinder so lsan-mpi.supp can name Open MPI's one
# leak (see dist.sh); srun and sbatch pass the environment on to them.
ASAN_OPTIONS="${ASAN_OPTIONS:-}:fast_unwind_on_malloc=0"
export ASAN_OPTIONS
B=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
# through the operator entry point, fusectl slurm (which runs deploy/slurm/fusechat-slurm)
slurmctl() { "$B/tools/fusectl" slurm "$@"; }
PATH="$PATH:/usr/sbin"
for p in munged slurmctld slurmd sbatch mpirun; do
  command -v "$p" >/dev/null 2>&1 || { echo "slurm-job: $p missing: skipped"; exit 77; }
done
tmp=$(mktemp -d /tmp/fc-slurm.XXXXXX)
# FC_TEST_PORT: the first of 12 ports to use (several people testing on one machine)
port=${FC_TEST_PORT:-$((20000 + $$ % 20000))}
# A timeout (meson: SIGTERM to the group, SIGKILL 0.5 s later) may end this script before or
# during its clean-up, and the workers run under slurmd, outside this process group: a guard in
# its own session sweeps every process of $tmp once this script is gone, however it went.
setsid "$HERE/local-slurm.sh" guard $$ "$tmp" </dev/null >/dev/null 2>&1 &
cleanup() {
  slurmctl down "$tmp/run" >/dev/null 2>&1
  FC_SLURM_PORT=$port "$HERE/local-slurm.sh" stop "$tmp/slurm"
  "$HERE/local-slurm.sh" sweep "$tmp"
  [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' INT TERM HUP
fail=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fail=1; }
FC_SLURM_PORT=$port "$HERE/local-slurm.sh" start "$tmp/slurm" >/dev/null || { echo "FAIL: local Slurm did not start"; exit 1; }
export SLURM_CONF="$tmp/slurm/slurm.conf"
"$B/tests/test_stage" --make-models "$tmp/m" >/dev/null 2>&1 || { echo "FAIL: test models"; exit 1; }
job() { # FILE STORE
  cat >"$1" <<EOJ
name: dp
store: $2
seed: 7
models:
  - {name: pivot, path: $tmp/m/pivot, role: pivot}
  - name: src
    path: $tmp/m/source
dataset: $tmp/m/data.jsonl
shards: 1
top_k: 4
training: {epochs: 1, lr: 1e-4, batch_size: 4, seq_len: 128, steps: 20, ranks: 2}
EOJ
}
job "$tmp/slurm.yaml" "$tmp/store-slurm"
job "$tmp/local.yaml" "$tmp/store-local"
cat >"$tmp/cluster.env" <<EOC
PARTITION=debug
TIME=00:10:00
HOST=127.0.0.1
PORT=$((port + 10))
BIN_DIR=$B/tools
DAEMON_DIR=$B/daemons
ALIGN_WORKERS=1
MERGE_WORKERS=0
MAX_MERGE_WORKERS=1
SCALE_EVERY=1
CPUS_LOGITS=1
CPUS_TRAIN=1
CPUS_ALIGN=1
CPUS_MERGE=1
EOC
# bad cluster sections first (nothing is started by them)
expect_msg() { # WHAT PATTERN
  if slurmctl up "$tmp/bad.env" "$tmp/slurm.yaml" "$tmp/badrun" >"$tmp/out" 2>&1; then bad "$1 accepted"
  elif grep -q "$2" "$tmp/out"; then ok "$1: $(cat "$tmp/out")"
  else bad "$1: $(cat "$tmp/out")"; fi
}
sed 's/^PARTITION=.*/PARTITION=gpu-large/' "$tmp/cluster.env" >"$tmp/bad.env"
expect_msg "unknown partition" "unknown partition 'gpu-large': set PARTITION to one of debug"
sed 's/^CPUS_TRAIN=.*/CPUS_TRAIN=64/' "$tmp/cluster.env" >"$tmp/bad.env"
expect_msg "more ranks than the allocation" "lower training.ranks or CPUS_TRAIN"
sed 's/^MAX_MERGE_WORKERS=.*/MAX_MERGE_WORKERS=two/' "$tmp/cluster.env" >"$tmp/bad.env"
expect_msg "a count that is not a number" "MAX_MERGE_WORKERS='two' is not a count: set it to a whole number"
t0=$(date +%s.%N)
if slurmctl up "$tmp/cluster.env" "$tmp/slurm.yaml" "$tmp/run"; then
  i=0
  while [ $i -lt 600 ] && ! grep -q "task.leased" "$tmp/run/coordinator.log" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  t1=$(date +%s.%N)
  echo "time from fusectl slurm up to the first leased task: $(echo "$t1 - $t0" | bc) s"
  # shellcheck disable=SC2046
  env $(cat "$tmp/run/env") "$B/tools/fusectl" workers | grep -q "slurm[0-9]" && ok "workers show their Slurm job ids" ||
    bad "no Slurm job ids in fusectl workers"
  timeout 300 "$B/tools/fusectl" slurm wait "$tmp/run" >"$tmp/wait.out" 2>&1 &
  waiter=$!
  # preemption: scancel the train worker's Slurm job while it holds the train task; the task
  # goes back to the queue, the scaler starts another train allocation, the task is leased again
  i=0
  while [ $i -lt 600 ] && ! grep -q "leased to train-slurm" "$tmp/run/coordinator.log" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  sleep 0.5 # into the srun step
  "$B/tools/fusectl" slurm queue "$tmp/run" >"$tmp/queue.out" 2>&1
  "$B/tools/fusectl" slurm queue --json "$tmp/run" >"$tmp/queue.json" 2>&1
  if awk '$1 == "train" && $4 == 1 && $8 == 1 && $9 == 1 && $10 == 0' "$tmp/queue.out" | grep -q . &&
     grep -q '"train":{[^}]*"leased":1' "$tmp/queue.json"; then ok "slurm queue: train 1 leased, 1 running element, 1 busy worker"
  else bad "slurm queue while training: $(cat "$tmp/queue.out" "$tmp/queue.json")"; fi
  tj=$(squeue -h -n fc-train -o %i | head -1)
  scancel "$tj" && echo "scancel of the train worker's Slurm job $tj while it trains"
  wait $waiter && ok "the job finished on Slurm" ||
    { bad "the job on Slurm: $(tail -5 "$tmp/wait.out")"; for f in "$tmp"/run/*.log; do tail -5 "$f"; done; }
  grep -q "train.* leased to train-slurm.*(lease 2)" "$tmp/run/coordinator.log" &&
    ok "the preempted train task was leased again (lease 2) by a new train worker" ||
    bad "no second lease of the train task: $(grep train "$tmp/run/coordinator.log" | tail -5)"
  # where the kill landed: mid-training (a checkpoint the second lease continued) or before the
  # first step (the second lease started over); both must give the same bytes below
  grep -ho "interrupted after step [0-9]* of [0-9]*" "$tmp"/run/train-*.log | head -1 | sed 's/^/note: the first lease was /'
  grep -q "merge: 1 ready, no free worker: one more" "$tmp/wait.out" &&
    ok "the scaler started a merge worker (none asked at up, MAX_MERGE_WORKERS=1)" ||
    bad "no merge worker from the scaler: $(cat "$tmp/wait.out")"
  grep -q "training on 2 ranks with srun" "$tmp"/run/train-*.log && ok "train task ran as a 2-rank srun step" ||
    bad "train task did not run as an srun step"
else
  bad "fusectl slurm up"
fi
"$B/tools/fusectl" run --local --quiet --threads 1 --run-dir "$tmp/local-run" "$tmp/local.yaml" >/dev/null 2>&1 || bad "run --local"
cmp "$tmp/store-slurm/dp/merged/model.safetensors" "$tmp/store-local/dp/merged/model.safetensors" &&
  ok "merged bytes on Slurm = run --local (2 ranks each, 1 thread per worker)" || bad "merged models differ"
# munge gone: the check says so
FC_SLURM_PORT=$port "$HERE/local-slurm.sh" stop "$tmp/slurm" 2>/dev/null
cp "$tmp/cluster.env" "$tmp/bad.env"
expect_msg "missing munge" "munge does not work here"
exit $fail
