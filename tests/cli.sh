#!/bin/sh
# fusectl's contract with scripts: every command has --help (exit 0, a Usage line), bad usage
# exits 2, failed work exits 1 with a one-line message, never a crash (exit >= 128).
set -u
FUSECTL="$1"
FIX="$2"
fail=0
pass=0
check() { # expected-rc description command...
  want="$1"; what="$2"; shift 2
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: $what: exit $rc, wanted $want: $out"; fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
}
check 0 "top-level help" "$FUSECTL" --help
check 2 "no command" "$FUSECTL"
check 2 "unknown command" "$FUSECTL" frobnicate
for cmd in $("$FUSECTL" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1}'); do
  out=$("$FUSECTL" "$cmd" --help 2>&1); rc=$?
  if [ "$rc" -ne 0 ] || ! printf '%s' "$out" | grep -q "^Usage: fusectl $cmd"; then
    echo "FAIL: fusectl $cmd --help: exit $rc: $out"; fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
  out=$("$FUSECTL" "$cmd" --no-such-option 2>&1); rc=$?
  if [ "$rc" -ne 2 ]; then
    echo "FAIL: fusectl $cmd --no-such-option: exit $rc, wanted 2"; fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
done
tmp=$(mktemp -d)
# a fusion-set size outside its range is a usage error before any work (nothing written)
check 2 "demo --fusion-convs too small" "$FUSECTL" demo --fusion-convs 5 --workdir "$tmp/demo-small"
check 0 "demo --fusion-convs says its range" sh -c "'$FUSECTL' demo --fusion-convs 5 --workdir '$tmp/demo-small' 2>&1 | grep -q 'fusion-convs wants a count from'"
check 2 "demo --fusion-convs not a number" "$FUSECTL" demo --fusion-convs many --workdir "$tmp/demo-nan"
check 2 "demo --experiment unknown" "$FUSECTL" demo --experiment poetry --workdir "$tmp/demo-exp"
check 0 "demo --experiment says what it knows" sh -c "'$FUSECTL' demo --experiment poetry --workdir '$tmp/demo-exp' 2>&1 | grep -q \"knows 'multi'\""
check 2 "demo --experiment with --ablations" "$FUSECTL" demo --experiment multi --ablations --workdir "$tmp/demo-exp"
check 2 "demo --sweeps without --ablations" "$FUSECTL" demo --sweeps multi --workdir "$tmp/demo-exp"
check 2 "demo --sweeps unknown" "$FUSECTL" demo --ablations --sweeps multi,poetry --workdir "$tmp/demo-exp"
check 0 "demo --sweeps says what it knows" sh -c "'$FUSECTL' demo --ablations --sweeps ,multi --workdir '$tmp/demo-exp' 2>&1 | grep -q 'lambda, top_k, fuse, vocab_map, multi, merges'"
check 1 "inspect a missing file" "$FUSECTL" inspect /nonexistent/model.safetensors
printf 'garbage' > "$tmp/bad.safetensors"
check 1 "inspect a corrupt file" "$FUSECTL" inspect "$tmp/bad.safetensors"
check 0 "inspect a fixture" "$FUSECTL" inspect "$FIX/st/sharded"
# Each source family is described (what it does, and that it is a source only).
for fam in mixtral_moe:experts internlm2_gqa_dynamic:wqkv gemma_mqa:GeGLU gemma2_softcap:"soft caps" phi3_partial:gate_up_proj; do
  dir="${fam%%:*}"; word="${fam#*:}"
  out=$("$FUSECTL" inspect "$FIX/arch/$dir" 2>&1); rc=$?
  if [ "$rc" -ne 0 ] || ! printf '%s' "$out" | grep -q "$word.*source only"; then
    echo "FAIL: inspect $dir does not describe its family: $out" | head -3; fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
done
mkdir -p "$tmp/falcon" && printf '{"model_type": "falcon", "hidden_size": 8}' > "$tmp/falcon/config.json"
out=$("$FUSECTL" inspect "$tmp/falcon" 2>&1); rc=$?
if [ "$rc" -ne 1 ] || ! printf '%s' "$out" | grep -q "mixtral, internlm2, gemma, gemma2, phi3"; then
  echo "FAIL: an unknown model_type does not list the supported ones: $out"; fail=$((fail + 1))
else
  pass=$((pass + 1))
fi
check 2 "gen-data bad mix" "$FUSECTL" gen-data --out "$tmp/x.jsonl" --mix poetry=1
check 2 "gen-data without --out" "$FUSECTL" gen-data
check 1 "gen-data to an unwritable place" "$FUSECTL" gen-data --out /nonexistent/dir/x.jsonl
check 0 "gen-data" "$FUSECTL" gen-data --out "$tmp/x.jsonl" --count 5
# The alignment stages on two tiny models with different tokenizers (made by test_stage).
if [ -n "${FC_BUILD:-}" ] && [ -x "$FC_BUILD/tests/test_stage" ] && "$FC_BUILD/tests/test_stage" --make-models "$tmp/stage" >/dev/null 2>&1; then
  m="$tmp/stage"
  check 2 "logits-dump without --model" "$FUSECTL" logits-dump --data "$m/data.jsonl" --out "$tmp/p.topk"
  check 2 "logits-dump bad --shard" "$FUSECTL" logits-dump --model "$m/pivot" --data "$m/data.jsonl" --out "$tmp/p.topk" --shard 2/2
  check 2 "logits-dump bad --template" "$FUSECTL" logits-dump --model "$m/pivot" --data "$m/data.jsonl" --out "$tmp/p.topk" --template vicuna
  check 2 "logits-dump bad --top-k" "$FUSECTL" logits-dump --model "$m/pivot" --data "$m/data.jsonl" --out "$tmp/p.topk" --top-k 0
  check 1 "logits-dump missing model" "$FUSECTL" logits-dump --model "$tmp/none" --data "$m/data.jsonl" --out "$tmp/p.topk"
  check 1 "logits-dump garbage data" "$FUSECTL" logits-dump --model "$m/pivot" --data "$tmp/bad.safetensors" --out "$tmp/p.topk"
  check 1 "logits-dump missing data" "$FUSECTL" logits-dump --model "$m/pivot" --data "$tmp/none.jsonl" --out "$tmp/p.topk"
  check 0 "logits-dump pivot" "$FUSECTL" logits-dump -q --model "$m/pivot" --data "$m/data.jsonl" --out "$tmp/p.topk"
  check 0 "logits-dump source" "$FUSECTL" logits-dump -q --model "$m/source" --pivot-tokenizer "$m/pivot" --data "$m/data.jsonl" --out "$tmp/s.topk"
  check 0 "logits-dump source, other data" "$FUSECTL" logits-dump -q --model "$m/source" --pivot-tokenizer "$m/pivot" --data "$m/data2.jsonl" --out "$tmp/s2.topk"
  check 2 "align without --text" "$FUSECTL" align --source-tokenizer "$m/source" --pivot-tokenizer "$m/pivot"
  check 1 "align missing tokenizer" "$FUSECTL" align --source-tokenizer "$tmp/none" --pivot-tokenizer "$m/pivot" --text hi
  check 1 "align empty text" "$FUSECTL" align --source-tokenizer "$m/pivot" --pivot-tokenizer "$m/pivot" --text ""
  out=$("$FUSECTL" align --source-tokenizer "$m/source" --pivot-tokenizer "$m/pivot" --text "What is 12 + 7?" --json)
  if printf '%s' "$out" | grep -Eq '^\{"pairs":\[\[0,0\](,\[[0-9]+,[0-9]+\])*\],"cost":[0-9]+\}$'; then pass=$((pass + 1)); else echo "FAIL: align --json: $out"; fail=$((fail + 1)); fi
  check 2 "vocab-map --merge without files" "$FUSECTL" vocab-map --merge --out "$tmp/x.counts"
  check 2 "vocab-map without --source" "$FUSECTL" vocab-map --pivot "$m/pivot" --data "$m/data.jsonl" --out "$tmp/x.map"
  check 2 "vocab-map bad --method" "$FUSECTL" vocab-map --source "$m/source" --pivot "$m/pivot" --data "$m/data.jsonl" --out "$tmp/x.map" --method best
  check 2 "vocab-map stats without data" "$FUSECTL" vocab-map --source "$m/source" --pivot "$m/pivot" --out "$tmp/x.map"
  check 1 "vocab-map --merge garbage" "$FUSECTL" vocab-map --merge "$tmp/bad.safetensors" --out "$tmp/x.counts"
  check 1 "vocab-map stores of other texts" "$FUSECTL" vocab-map --source "$m/source" --pivot "$m/pivot" --source-topk "$tmp/s2.topk" --pivot-topk "$tmp/p.topk" --out "$tmp/x.map"
  check 0 "vocab-map shard 0" "$FUSECTL" vocab-map -q --source "$m/source" --pivot "$m/pivot" --data "$m/data.jsonl" --shard 0/2 --counts-out "$tmp/c0"
  check 0 "vocab-map shard 1" "$FUSECTL" vocab-map -q --source "$m/source" --pivot "$m/pivot" --data "$m/data.jsonl" --shard 1/2 --counts-out "$tmp/c1"
  check 0 "vocab-map --merge" "$FUSECTL" vocab-map --merge "$tmp/c0" "$tmp/c1" --source "$m/source" --pivot "$m/pivot" --out "$tmp/s.map"
  check 0 "vocab-map from the stores" "$FUSECTL" vocab-map -q --source "$m/source" --pivot "$m/pivot" --source-topk "$tmp/s.topk" --pivot-topk "$tmp/p.topk" --out "$tmp/s1.map"
  check 0 "maps from merged shards and from the stores agree" cmp "$tmp/s.map" "$tmp/s1.map"
  check 2 "fuse without --map" "$FUSECTL" fuse --pivot "$m/pivot" --pivot-topk "$tmp/p.topk" --source "$m/source" --source-topk "$tmp/s.topk" --out "$tmp/f.topk"
  check 2 "fuse bad --method" "$FUSECTL" fuse --pivot "$m/pivot" --pivot-topk "$tmp/p.topk" --source "$m/source" --source-topk "$tmp/s.topk" --map "$tmp/s.map" --out "$tmp/f.topk" --method max
  check 1 "fuse garbage store" "$FUSECTL" fuse -q --pivot "$m/pivot" --pivot-topk "$tmp/bad.safetensors" --source "$m/source" --source-topk "$tmp/s.topk" --map "$tmp/s.map" --out "$tmp/f.topk"
  check 1 "fuse stores of other texts" "$FUSECTL" fuse -q --pivot "$m/pivot" --pivot-topk "$tmp/p.topk" --source "$m/source" --source-topk "$tmp/s2.topk" --map "$tmp/s.map" --out "$tmp/f.topk"
  check 1 "fuse against other data" "$FUSECTL" fuse -q --pivot "$m/pivot" --pivot-topk "$tmp/p.topk" --source "$m/source" --source-topk "$tmp/s.topk" --map "$tmp/s.map" --data "$m/data2.jsonl" --out "$tmp/f.topk"
  check 0 "fuse" "$FUSECTL" fuse -q --pivot "$m/pivot" --pivot-topk "$tmp/p.topk" --source "$m/source" --source-topk "$tmp/s.topk" --map "$tmp/s.map" --data "$m/data.jsonl" --out "$tmp/f.topk"
  check 0 "fuse again" "$FUSECTL" fuse -q --pivot "$m/pivot" --pivot-topk "$tmp/p.topk" --source "$m/source" --source-topk "$tmp/s.topk" --map "$tmp/s.map" --out "$tmp/f2.topk"
  check 0 "fuse reruns give the same bytes" cmp "$tmp/f.topk" "$tmp/f2.topk"
  check 1 "no aligned stores left behind" test -e "$tmp/f.topk.aligned0"
  check 0 "train on the fused targets" "$FUSECTL" train --model "$m/pivot" --data "$m/data.jsonl" --targets "$tmp/f.topk" --out "$tmp/tf" --steps 1 --quiet
  check 1 "train on targets of other data" "$FUSECTL" train --model "$m/pivot" --data "$m/data2.jsonl" --targets "$tmp/f.topk" --out "$tmp/tf2" --steps 1 --quiet
else
  echo "FAIL: cannot make the stage test models (FC_BUILD/tests/test_stage)"; fail=$((fail + 1))
fi
check 0 "gen-data eval split" "$FUSECTL" gen-data --split eval --out "$tmp/e.jsonl" --count 5
check 1 "eval a missing model" "$FUSECTL" eval --model /nonexistent/model --data "$tmp/e.jsonl"
check 1 "eval missing data" "$FUSECTL" eval --model /nonexistent/model --data "$tmp/none.jsonl"
printf '{"conversations":[{"from":"human","value":"q"}]}\n' > "$tmp/noanswer.jsonl"
check 1 "eval a row without an answer" "$FUSECTL" eval --model /nonexistent/model --data "$tmp/noanswer.jsonl"
check 2 "eval without --data" "$FUSECTL" eval --model /nonexistent/model
check 2 "eval without --model" "$FUSECTL" eval --data "$tmp/e.jsonl"
check 2 "eval --batch-size 0" "$FUSECTL" eval --model m --data "$tmp/e.jsonl" --batch-size 0
check 2 "eval --max-new-tokens x" "$FUSECTL" eval --model m --data "$tmp/e.jsonl" --max-new-tokens x
check 2 "eval --template bogus" "$FUSECTL" eval --model m --data "$tmp/e.jsonl" --template bogus
check 2 "eval stray argument" "$FUSECTL" eval --model m --data "$tmp/e.jsonl" extra
check 2 "merge without --out" "$FUSECTL" merge "$FIX/merge/sce.yaml"
check 1 "merge a missing config" "$FUSECTL" merge "$tmp/none.yaml" --out "$tmp/m"
printf 'merge_method: ties\nmodels: [\n' > "$tmp/bad.yaml"
check 1 "merge a broken config" "$FUSECTL" merge "$tmp/bad.yaml" --out "$tmp/m"
check 2 "merge an unknown method" "$FUSECTL" merge --method nope --base "$FIX/merge/base" --models "$FIX/merge/m1" --out "$tmp/m"
check 1 "merge mismatched models" "$FUSECTL" merge --method ties --base "$FIX/merge/base" --models "$FIX/st/sharded" --out "$tmp/m"
check 0 "merge fixtures (short form)" "$FUSECTL" merge -q --method sce --base "$FIX/merge/base" --models "$FIX/merge/m1" "$FIX/merge/m2" --param select_topk=0.3 --out "$tmp/m"
# mergekit's example configs, as its repository writes them (with our fixture models): a
# passthrough frankenmerge without a base_model, and the gradient SLERP written with slices.
printf 'slices:\n  - sources:\n    - model: %s\n      layer_range: [0, 2]\n  - sources:\n    - model: %s\n      layer_range: [1, 3]\nmerge_method: passthrough\ndtype: float16\n' \
  "$FIX/merge/base" "$FIX/merge/m1" > "$tmp/franken.yaml"
check 0 "merge passthrough slices without a base" "$FUSECTL" merge -q "$tmp/franken.yaml" --out "$tmp/franken"
check 0 "passthrough depth follows the slices" grep -q '"num_hidden_layers": 4' "$tmp/franken/config.json"
printf 'slices:\n  - sources:\n      - model: %s\n        layer_range: [0, 3]\n      - model: %s\n        layer_range: [0, 3]\nmerge_method: slerp\nbase_model: %s\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5 # fallback for rest of tensors\ndtype: float16\n' \
  "$FIX/merge/base" "$FIX/merge/m1" "$FIX/merge/base" > "$tmp/gslerp.yaml"
check 0 "merge gradient SLERP by slices" "$FUSECTL" merge -q "$tmp/gslerp.yaml" --out "$tmp/gslerp"
check 2 "train without --data" "$FUSECTL" train --model "$FIX/model/llama_gqa" --out "$tmp/t"
check 2 "train with --model and --config" "$FUSECTL" train --model "$FIX/model/llama_gqa" --config x --data x --out "$tmp/t"
check 2 "train bad --lr" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data x --out "$tmp/t" --lr fast
check 2 "train bad --schedule" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data x --out "$tmp/t" --schedule linear
check 1 "train a missing model" "$FUSECTL" train --model /nonexistent --data "$FIX/train/train_data.jsonl" --out "$tmp/t"
printf '{"input_ids":[1,2]}\n{"input_ids":[1,\n' > "$tmp/bad.jsonl"
check 1 "train on a bad line" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$tmp/bad.jsonl" --out "$tmp/t"
check 1 "train stopped after a step" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/t" --steps 2 --stop-after 1 --quiet
check 0 "train resumed" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/t" --steps 2 --resume --quiet
# the memory options are train-table rows: a bad dtype is a usage error, and the flags reach the
# trainer (its checkpoint holds bf16 moments, magic FCADAMWB)
check 2 "train bad --optimizer-dtype" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data x --out "$tmp/t" --optimizer-dtype F16
check 1 "train with both memory options, stopped" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/tm" --steps 2 --stop-after 1 --checkpoint-activations --optimizer-dtype BF16 --quiet
check 0 "its checkpoint holds bf16 moments" grep -qa FCADAMWB "$tmp/tm/checkpoint-1/trainer_state.bin"
check 0 "f32 moments by default" grep -qa FCADAMW1 "$tmp/t/checkpoint-2/trainer_state.bin"
# the fused optimizer trains (a loss per step, stepping inside backward) and refuses accumulation
check 0 "train with the fused optimizer" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/tf" --steps 2 --fused-optimizer --checkpoint-activations --optimizer-dtype BF16 --quiet
check 0 "its loss log has both steps" sh -c "tail -n 1 '$tmp/tf/loss.csv' | grep -q '^2,'"
check 1 "fused optimizer with accumulation" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/tg" --steps 1 --fused-optimizer --grad-accum 2 --quiet
printf '{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":966}' > "$tmp/config.json"
"$FUSECTL" gen-data --out "$tmp/chat.jsonl" --count 8 >/dev/null 2>&1
check 0 "train from scratch on conversations" "$FUSECTL" train --config "$tmp/config.json" --tokenizer "$FIX/tok/trained_byte/tokenizer.json" --data "$tmp/chat.jsonl" --out "$tmp/s" --steps 2 --quiet
check 0 "eval the trained model" "$FUSECTL" eval -q --model "$tmp/s" --data "$tmp/e.jsonl" --max-new-tokens 2 --json "$tmp/r.json"
if ! grep -q '"models"' "$tmp/r.json" 2>/dev/null; then echo "FAIL: eval --json wrote no results"; fail=$((fail + 1)); fi
check 1 "eval a model without tokenizer.json" "$FUSECTL" eval -q --model "$FIX/model/llama_gqa" --data "$tmp/e.jsonl"
check 2 "train bad --chat-template" "$FUSECTL" train --config "$tmp/config.json" --tokenizer x --data x --out "$tmp/s" --chat-template vicuna
# Jobs on this machine, the report, direct queries, the daemons' own --help.
check 2 "query without --endpoint" "$FUSECTL" query --ids "1 2"
check 2 "query with text and ids" "$FUSECTL" query --endpoint "ipc://$tmp/none.ipc" --ids 1 --text hi
check 2 "query bad ids" "$FUSECTL" query --endpoint "ipc://$tmp/none.ipc" --ids "1 -2"
check 2 "query --chat without text" "$FUSECTL" query --endpoint "ipc://$tmp/none.ipc" --ids 1 --chat
check 1 "query nobody" "$FUSECTL" query --endpoint "ipc://$tmp/none.ipc" --ids 1 --timeout 0.3
check 2 "report without a job" "$FUSECTL" report
check 1 "report a missing directory" "$FUSECTL" report --dir "$tmp/nojob"
mkdir -p "$tmp/job/eval" && cp "$tmp/r.json" "$tmp/job/eval/one.json" 2>/dev/null
check 0 "report a job directory" "$FUSECTL" report --dir "$tmp/job"
check 0 "report wrote results.json" grep -q '"models"' "$tmp/job/results.json"
# report --json: the table's content. Three models (pivot, sft, fused) over two families with
# per-item results made up here; every figure, interval and mark of the printed table is
# found again in the JSON.
mkdir -p "$tmp/job3/eval"
python3 - "$tmp/job3/eval" <<'PY'
import json, random, sys
random.seed(7)
def model(name, role, p):
    items, fams = [], {}
    for fam, n in (("math", 30), ("chat", 20)):
        rows = [{"id": "%s%d" % (fam, i), "family": fam, "correct": random.random() < p, "loss": random.uniform(0.5, 2) / p,
                 "tokens": random.randint(1, 9)} for i in range(n)]
        items += rows
        c = sum(r["correct"] for r in rows)
        fams[fam] = {"n": n, "correct": c, "accuracy": c / n, "loss": 1.0, "tokens": 1, "generated": 1}
    return {"model": name, "role": role, "families": fams, "macro_accuracy": 0, "macro_loss": 0, "items": items}
for i, (n, r, p) in enumerate((("pivot", "pivot", 0.3), ("sft", "sft", 0.5), ("fused", "fused", 0.9))):
    json.dump({"models": [model(n, r, p)]}, open("%s/%d.json" % (sys.argv[1], i), "w"))
PY
"$FUSECTL" report --dir "$tmp/job3" --no-write > "$tmp/table.txt" 2>&1
"$FUSECTL" report --dir "$tmp/job3" --json > "$tmp/table.json" 2> "$tmp/table.err"
if python3 - "$tmp/table.txt" "$tmp/table.json" "$tmp/job3/results.json" <<'PY'; then pass=$((pass + 1)); else echo "FAIL: report --json is not the table"; cat "$tmp/table.txt" "$tmp/table.json" "$tmp/table.err"; fail=$((fail + 1)); fi
import json, re, sys
txt = open(sys.argv[1]).read().split("\n\n")
j = json.load(open(sys.argv[2]))
assert j["results"] == sys.argv[3] and j["references"] == ["pivot", "sft"], j
models = {m["model"]: m for m in j["models"]}
cell = re.compile(r"(\S+) \[(\S+?),(\S+?)\] (.)(.)")
seen = 0
for block, what, scale, fmt in ((txt[0], "accuracy", 100, "%.1f"), (txt[1], "loss", 1, "%.3f")):
    lines = block.splitlines()[1:]
    cols = [c.split(" (")[0] for c in re.split(r"\s{2,}", lines[0].strip())[1:]]
    for line in lines[1:]:
        name = line.split()[0]
        cells = cell.findall(line)
        assert len(cells) == len(cols), (line, cols)
        for col, (v, lo, hi, ma, mb) in zip(cols, cells):
            c = models[name]["macro" if col == "macro" else "families"][what] if col == "macro" else models[name]["families"][col][what]
            assert (fmt % (scale * c["value"]), fmt % (scale * c["lo"]), fmt % (scale * c["hi"])) == (v, lo, hi), (name, col, c, v, lo, hi)
            for ref, m, sym in (("pivot", ma, "+-"), ("sft", mb, "><")):
                want = {"better": sym[0], "worse": sym[1], None: " "}[c["vs"][ref]["mark"]] if ref in c["vs"] else " "
                assert want == m, (name, col, ref, c["vs"], m)
            seen += 1
assert seen == 2 * 3 * 3, seen
assert any(c["mark"] for m in j["models"] for c in m["macro"]["accuracy"]["vs"].values()), "no mark at all: a weak test"
PY
printf '{"models": 3}' > "$tmp/job/eval/two.json"
check 1 "report a bad eval file" "$FUSECTL" report --dir "$tmp/job" --no-write
check 2 "run without --local" "$FUSECTL" run "$tmp/none.yaml"
check 2 "run without a spec" "$FUSECTL" run --local
check 1 "run a missing spec" "$FUSECTL" run --local "$tmp/none.yaml"
printf 'name: j\nstore: %s/store\nbogus: 1\n' "$tmp" > "$tmp/badjob.yaml"
check 2 "run a bad spec" "$FUSECTL" run --local --run-dir "$tmp/run0" "$tmp/badjob.yaml"
check 1 "run a bad spec started nothing" test -e "$tmp/run0/coordinator.pid"
printf 'x\n' > "$tmp/in"
printf 'name: ok\nstore: %s/store\ntasks:\n  - {name: a, kind: checksum, inputs: [%s/in], outputs: [a.out], params: {ms: 10}}\n' "$tmp" "$tmp" > "$tmp/okjob.yaml"
check 0 "run a job locally" "$FUSECTL" run --local --quiet --run-dir "$tmp/run1" "$tmp/okjob.yaml"
check 0 "the local job wrote its output" test -s "$tmp/store/ok/a.out"
printf 'name: no\nstore: %s/store\nmax_attempts: 1\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 10, fail: 1}}\n' "$tmp" > "$tmp/failjob.yaml"
check 1 "run a failing job locally" "$FUSECTL" run --local --quiet --run-dir "$tmp/run2" "$tmp/failjob.yaml"
check 1 "nothing left up after run" "$FUSECTL" down --run-dir "$tmp/run2"
printf 'daemons:\n  - {type: logits, count: 1}\n' > "$tmp/up1.yaml"
check 1 "up --config: logits without a model" "$FUSECTL" up --run-dir "$tmp/run3" --config "$tmp/up1.yaml"
printf 'daemons:\n  - {type: juggler}\n' > "$tmp/up2.yaml"
check 1 "up --config: unknown type" "$FUSECTL" up --run-dir "$tmp/run3" --config "$tmp/up2.yaml"
printf 'lease_timeout: soon\n' > "$tmp/up3.yaml"
check 1 "up --config: bad lease" "$FUSECTL" up --run-dir "$tmp/run3" --config "$tmp/up3.yaml"
check 1 "up --config: missing file" "$FUSECTL" up --run-dir "$tmp/run3" --config "$tmp/none.yaml"
printf 'heartbeat: 0.2\ndaemons:\n  - {type: merge}\n  - {type: eval, count: 2, threads: 1}\n' > "$tmp/up4.yaml"
check 0 "up --config" "$FUSECTL" up --run-dir "$tmp/run4" --config "$tmp/up4.yaml"
check 0 "down after up --config" "$FUSECTL" down --run-dir "$tmp/run4"
check 0 "up --config started eval-2" test -e "$tmp/run4/eval-2.log"
# Every stage parameter is refused at the first door: fusectl submit (exit 2, the key and its
# range in the message) sends nothing, so the coordinator's list stays empty.
check 0 "up a bare coordinator" "$FUSECTL" up --run-dir "$tmp/runS" --test-workers 0
EP="ipc://$tmp/runS/coord.ipc"
spec() { # name yaml-lines...
  f="$tmp/spec-$1.yaml"; shift
  printf 'name: bad\nstore: %s/store\ndataset: /d.jsonl\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: s, path: /s}\n' "$tmp" > "$f"
  printf '%s\n' "$@" >> "$f"
}
refused() { # name expected-message-part
  out=$("$FUSECTL" submit --endpoint "$EP" "$tmp/spec-$1.yaml" 2>&1); rc=$?
  if [ "$rc" -ne 2 ] || ! printf '%s' "$out" | grep -qF -- "$2"; then
    echo "FAIL: submit $1: exit $rc, wanted 2 and '$2': $out"; fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
}
spec seq1 'training: {seq_len: 1}'; refused seq1 "'training.seq_len' is 1, it must be in [2, 1048576]"
spec topk0 'top_k: 0'; refused topk0 "'top_k' is 0, it must be in [1, 256]"
spec topk1000 'top_k: 1000'; refused topk1000 "'top_k' is 1000, it must be in [1, 256]"
spec lambda 'lambda: 1.5'; refused lambda "'lambda' is 1.5, it must be in [0, 1]"
spec unknown 'top_p: 0.9'; refused unknown "unknown key 'top_p' in the job spec"
spec string 'training: {lr: fast}'; refused string "'training.lr' must be a number in [0, 10], not 'fast'"
spec suffix 'training: {batch_size: 8x}'; refused suffix "'training.batch_size' must be an integer in [1, 65536], not '8x'"
spec mparam 'merge: {method: ties, parameters: {dnsity: 0.5}}'; refused mparam "unknown parameter 'dnsity'"
spec mrange 'merge: {method: sce, parameters: {select_topk: 2}}'; refused mrange "select_topk: 2 is outside [0, 1]"
spec ok 'top_k: 4' 'training: {seq_len: 64}'
out=$("$FUSECTL" list --endpoint "$EP" 2>&1)
if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then
  echo "FAIL: refused specs were queued: $out"; fail=$((fail + 1))
else
  pass=$((pass + 1))
fi
check 0 "submit a good spec" "$FUSECTL" submit --endpoint "$EP" "$tmp/spec-ok.yaml"
check 0 "the good spec is listed" sh -c "'$FUSECTL' list --endpoint '$EP' | grep -q bad"
check 0 "down the bare coordinator" "$FUSECTL" down --run-dir "$tmp/runS"
# The README's job spec reference is fusectl schema's output.
readme="$FIX/../../README.md"
awk '/^## Job spec reference/{on=1; next} on && /^## /{exit} on && /^\|/' "$readme" > "$tmp/readme-table.md"
"$FUSECTL" schema > "$tmp/schema.md"
check 0 "README job reference = fusectl schema" cmp "$tmp/readme-table.md" "$tmp/schema.md"
check 0 "fusectl schema --json" sh -c "'$FUSECTL' schema --json | grep -q '\"key\": \"training.seq_len\"'"
if [ -n "${FC_BUILD:-}" ]; then
  for d in logits align train merge eval worker-test; do
    check 0 "fusechat-$d --help" "$FC_BUILD/daemons/fusechat-$d" --help
    check 2 "fusechat-$d bad option" "$FC_BUILD/daemons/fusechat-$d" --no-such-option
    check 2 "fusechat-$d stray argument" "$FC_BUILD/daemons/fusechat-$d" stray
  done
  check 2 "fusechat-logits without --model" "$FC_BUILD/daemons/fusechat-logits" --name x
  check 2 "fusechat-logits bad --name" "$FC_BUILD/daemons/fusechat-logits" --model "$tmp" --name "a b"
  check 2 "fusechat-train bad --threads" "$FC_BUILD/daemons/fusechat-train" --threads 0
  check 2 "fusechat-train --checkpoint-every 8x" "$FC_BUILD/daemons/fusechat-train" --checkpoint-every 8x
  check 2 "fusechat-logits --batch 0" "$FC_BUILD/daemons/fusechat-logits" --model "$tmp" --name x --batch 0
  # one default each: the daemons' --help, fusectl's flags and the job reference read one table
  "$FUSECTL" schema > "$tmp/ref.md"
  ck=$(awk -F'|' '$2 ~ /training.checkpoint_every/ {gsub(/[ `]/, "", $4); print $4}' "$tmp/ref.md")
  lr=$(awk -F'|' '$2 ~ /training.lr/ {gsub(/[ `]/, "", $4); print $4}' "$tmp/ref.md")
  topk=$(awk -F'|' '$2 ~ /`top_k`/ {gsub(/[ `]/, "", $4); print $4}' "$tmp/ref.md")
  check 0 "train daemon's default checkpoint period = the reference's ($ck)" sh -c "'$FC_BUILD/daemons/fusechat-train' --help | grep -q '(default $ck;'"
  check 0 "fusectl train's default lr = the reference's ($lr)" sh -c "'$FUSECTL' train --help | grep -q -- '--lr X .*(default $lr;'"
  check 0 "fusectl logits-dump's default top-k = the reference's ($topk)" sh -c "'$FUSECTL' logits-dump --help | grep -q -- '--top-k N .*(default $topk;'"
fi
rm -rf "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
