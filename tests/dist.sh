#!/bin/sh
# Data-parallel training over MPI (fusectl train --ranks): 2 ranks equal one process within
# relative 1e-5 on every weight after 10 steps, bitwise the same run to run, ZeRO-1 optimizer
# slices in the checkpoints, and resumption with another rank count.
# Usage: dist.sh FUSECTL ST_CLOSE FIXTURES
set -u
FUSECTL=$1 CLOSE=$2 FIX=$3
if ! command -v mpirun >/dev/null 2>&1; then echo "dist: no mpirun (openmpi-bin): skipped"; exit 77; fi
tmp=$(mktemp -d /tmp/fc-dist.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; fail=1; }
A="--model $FIX/model/llama_gqa --data $FIX/train/train_data.jsonl --steps 10 --batch-size 4 --grad-accum 1
   --lr 1e-4 --warmup 2 --weight-decay 0.1 --seq-len 64 --quiet"
# shellcheck disable=SC2086
{
  "$FUSECTL" train $A --out "$tmp/one" >/dev/null || bad "one process"
  "$FUSECTL" train $A --out "$tmp/two" --ranks 2 >/dev/null || bad "2 ranks"
  "$FUSECTL" train $A --out "$tmp/two-again" --ranks 2 >/dev/null || bad "2 ranks again"
  "$FUSECTL" train $A --out "$tmp/three" --ranks 3 >/dev/null || bad "3 ranks"
}
"$CLOSE" "$tmp/two/model.safetensors" "$tmp/one/model.safetensors" 1e-5 && ok "2 ranks = 1 process (rel 1e-5)" ||
  bad "2 ranks differ from 1 process"
"$CLOSE" "$tmp/three/model.safetensors" "$tmp/one/model.safetensors" 1e-5 && ok "3 ranks (uneven slices) = 1 process" ||
  bad "3 ranks differ from 1 process"
cmp -s "$tmp/two/model.safetensors" "$tmp/two-again/model.safetensors" && ok "2 ranks bitwise the same twice" ||
  bad "2 ranks not reproducible"
[ -f "$tmp/two/checkpoint-10/optimizer-1-of-2.bin" ] && ok "rank 1 wrote its optimizer slice" ||
  bad "no optimizer-1-of-2.bin in the checkpoint"
# resumption across rank counts: 2 -> 1 and 1 -> 2 (and 2 -> 2 is bitwise)
# shellcheck disable=SC2086
{
  "$FUSECTL" train $A --out "$tmp/r21" --ranks 2 --stop-after 5 >/dev/null 2>&1
  "$FUSECTL" train $A --out "$tmp/r21" --resume >/dev/null || bad "resume 2 -> 1"
  "$FUSECTL" train $A --out "$tmp/r12" --stop-after 5 >/dev/null 2>&1
  "$FUSECTL" train $A --out "$tmp/r12" --ranks 2 --resume >/dev/null || bad "resume 1 -> 2"
  "$FUSECTL" train $A --out "$tmp/r22" --ranks 2 --stop-after 5 >/dev/null 2>&1
  "$FUSECTL" train $A --out "$tmp/r22" --ranks 2 --resume >/dev/null || bad "resume 2 -> 2"
}
"$CLOSE" "$tmp/r21/model.safetensors" "$tmp/one/model.safetensors" 1e-5 && ok "2 ranks then 1 = 1 process" ||
  bad "resumed 2 -> 1 differs"
"$CLOSE" "$tmp/r12/model.safetensors" "$tmp/one/model.safetensors" 1e-5 && ok "1 process then 2 ranks = 1 process" ||
  bad "resumed 1 -> 2 differs"
cmp -s "$tmp/r22/model.safetensors" "$tmp/two/model.safetensors" && ok "2 ranks resumed on 2 = uninterrupted, bitwise" ||
  bad "resumed 2 -> 2 not bitwise"
# more ranks than rows in a step: a usage error that names the limit
# shellcheck disable=SC2086
"$FUSECTL" train $A --out "$tmp/x" --ranks 5 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "exceeds the 4 rows" "$tmp/err" && ok "5 ranks for 4 rows refused" || bad "5 ranks: exit $rc"
# A fusion job whose train task asks for training: {ranks: 2}: the train daemon launches the
# ranks; the trained target equals the one-process job's within relative 1e-5, and two runs
# merge to the same bytes.
if [ -n "${FC_BUILD:-}" ] && "$FC_BUILD/tests/test_stage" --make-models "$tmp/m" >/dev/null 2>&1; then
  job() { # NAME RANKS
    cat >"$tmp/$1.yaml" <<EOJ
name: $1
store: $tmp/store
seed: 7
models:
  - {name: pivot, path: $tmp/m/pivot, role: pivot}
  - {name: src, path: $tmp/m/source, role: source}
dataset: $tmp/m/data.jsonl
shards: 1
top_k: 4
training: {epochs: 1, lr: 1e-4, batch_size: 4, seq_len: 128, steps: 6, ranks: $2}
EOJ
    "$FUSECTL" run --local --quiet --run-dir "$tmp/run-$1" "$tmp/$1.yaml" >"$tmp/$1.out" 2>&1
  }
  job one 1 || bad "job on 1 rank"
  job two 2 && grep -q "training on 2 ranks" "$tmp/run-two/train-1.log" && ok "job with training.ranks 2 ran" ||
    bad "job with training.ranks 2"
  job again 2 || bad "job with training.ranks 2, again"
  "$CLOSE" "$tmp/store/two/targets/src/model.safetensors" "$tmp/store/one/targets/src/model.safetensors" 1e-5 &&
    ok "job target on 2 ranks = 1 rank" || bad "job target on 2 ranks differs"
  cmp -s "$tmp/store/two/merged/model.safetensors" "$tmp/store/again/merged/model.safetensors" &&
    ok "2-rank jobs merge to the same bytes" || bad "2-rank jobs merge differently"
  job wide 5
  grep -q "training.ranks 5 exceeds training.batch_size 4" "$tmp/wide.out" && ok "ranks > batch_size refused" ||
    bad "ranks > batch_size: $(cat "$tmp/wide.out")"
fi
exit $fail
