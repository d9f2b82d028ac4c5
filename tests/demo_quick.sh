#!/bin/sh
# The demo's small version end to end (data, three models trained from scratch, the fusion job
# through real daemons, evaluation): it must finish, print the table and score every model on
# every family.
set -u
FUSECTL="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out="$tmp/out.txt"
if ! "$FUSECTL" demo --quick --workdir "$tmp/demo" >"$out" 2>&1; then
  tail -40 "$out"
  echo "0 passed, 1 failed"
  exit 1
fi
pass=1
fail=0
res="$tmp/demo/results.json"
# The tables (accuracy, then loss): a header naming the families with their sizes, one row per
# model with a figure and its interval per family, the marks' legend naming pivot and sft.
for fam in arith convert strings facts; do
  if [ "$(grep -c "^model .*$fam (n=[1-9][0-9]*)" "$out")" -eq 2 ]; then pass=$((pass + 1)); else echo "FAIL: tables lack $fam"; fail=$((fail + 1)); fi
done
if grep -q "better/worse than pivot; >/< better/worse than sft" "$out"; then pass=$((pass + 1)); else echo "FAIL: no legend of the marks"; fail=$((fail + 1)); fi
# Every model of the experiment and every baseline is scored on every family.
for m in pivot src-facts src-arith target-src-facts target-src-arith sft merged-sce merged-sce-mergekit \
         merged-task_arithmetic merged-ties merged-dare_ties; do
  if [ "$(grep -c "^$m  *[0-9.]* \[[0-9.]*,[0-9.]*\]" "$out")" -eq 2 ]; then pass=$((pass + 1)); else echo "FAIL: no table rows for $m"; fail=$((fail + 1)); fi
  for fam in arith convert strings facts; do
    # one line per model entry of results.json, then that family's row count
    entry=$(tr -d '\n ' <"$res" | sed 's/{"model":/\n&/g' | grep "^{\"model\":\"$m\",")
    if echo "$entry" | grep -q "\"$fam\":{\"n\":[1-9]"; then
      pass=$((pass + 1))
    else
      echo "FAIL: $m has no $fam score in results.json"; fail=$((fail + 1))
    fi
    # per-item results with ids stable across models
    if echo "$entry" | grep -q "{\"id\":\"$fam-1\",\"family\":\"$fam\",\"correct\":\(true\|false\),\"loss\":[0-9]"; then
      pass=$((pass + 1))
    else
      echo "FAIL: $m has no item $fam-1 in results.json"; fail=$((fail + 1))
    fi
  done
done
rows=$(grep -c '^[a-z][a-z_-]*  *[0-9.]* \[[0-9.]*,[0-9.]*\]' "$out")
if [ "$rows" -eq 22 ]; then pass=$((pass + 1)); else echo "FAIL: $rows table rows, wanted 2 x 11"; fail=$((fail + 1)); fi
# The Multi row of the ablations runs the job's stages by hand (fusectl fuse, fusectl train) on
# the job's stores; with one source they must give the job's own fused store and target, to the
# byte, so that Multi differs from the pairwise targets in its fused store only. (The demo runs
# its job with the daemons' default threads, the online cores.)
job="$tmp/demo/store/demo-quick"
eq=1
for s in 0 1; do
  "$FUSECTL" fuse --pivot "$tmp/demo/models/pivot" --pivot-topk "$job/logits/pivot.shard-000$s.topk" \
    --source "$tmp/demo/models/src-facts" --source-topk "$job/logits/src-facts.shard-000$s.topk" \
    --map "$job/vocab/src-facts.vmap" --data "$tmp/demo/data/fusion.jsonl" --shard "$s/2" --max-len 128 \
    --out "$tmp/facts.$s.topk" --quiet >/dev/null 2>&1 && cmp -s "$tmp/facts.$s.topk" "$job/align/src-facts.shard-000$s.fused" || eq=0
done
if [ "$eq" -eq 1 ]; then pass=$((pass + 1)); else echo "FAIL: fusectl fuse does not give the job's fused store"; fail=$((fail + 1)); fi
if "$FUSECTL" train --model "$tmp/demo/models/pivot" --data "$tmp/demo/data/fusion.jsonl" --out "$tmp/facts-target" \
     --targets "$tmp/facts.0.topk" --targets "$tmp/facts.1.topk" --lambda 0.9 --epochs 1 --lr 1e-3 --batch-size 16 \
     --seq-len 128 --warmup-ratio 0.03 --weight-decay 0 --seed 1 --threads "$(getconf _NPROCESSORS_ONLN)" --quiet >/dev/null 2>&1 &&
   cmp -s "$tmp/facts-target/model.safetensors" "$job/targets/src-facts/model.safetensors"; then
  pass=$((pass + 1))
else
  echo "FAIL: fusectl train on those stores does not give the job's target"; fail=$((fail + 1))
fi
# The ablations' parts that read the demo job's stores, on the cached models: the base job, the
# one multi-teacher target fused from the pivot and both sources (fusectl fuse with two sources,
# then train), and the merges with SLERP between the two targets; every one scored.
abl="$tmp/abl.txt"
if "$FUSECTL" demo --quick --workdir "$tmp/demo" --ablations --sweeps multi,merges >"$abl" 2>&1; then
  pass=$((pass + 1))
  # the table (the log also holds each job's and each evaluation's own tables)
  for m in base:pivot base:sft base:merged-sce target-multi merge-slerp merge-sce-0.1 merge-dare_ties; do
    if [ "$(grep -c "^$m  *[0-9.]* \[[0-9.]*,[0-9.]*\]" "$tmp/demo/ablations.txt")" -eq 2 ]; then pass=$((pass + 1)); else echo "FAIL: no ablation rows for $m"; fail=$((fail + 1)); fi
  done
  # the multi-teacher target's fusion had three candidates (fusectl fuse names the winners) on
  # both shards, and the target was trained
  if [ "$(grep -c "topk: [0-9]* examples fused (mince); won by pivot [0-9]*, source 1 [0-9]*, source 2 [0-9]*$" "$abl")" -eq 2 ] &&
     [ -s "$tmp/demo/ablate/target-multi/model.safetensors" ]; then
    pass=$((pass + 1))
  else
    echo "FAIL: no fused store or no trained multi-teacher target"; fail=$((fail + 1))
  fi
  # the parts left out are not run: no lambda job
  if [ ! -e "$tmp/demo/store/abl-lambda-0.7" ]; then pass=$((pass + 1)); else echo "FAIL: --sweeps ran lambda"; fail=$((fail + 1)); fi
else
  tail -40 "$abl"
  echo "FAIL: demo --quick --ablations --sweeps multi,merges"; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
