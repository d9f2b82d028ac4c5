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
check 1 "inspect a missing file" "$FUSECTL" inspect /nonexistent/model.safetensors
printf 'garbage' > "$tmp/bad.safetensors"
check 1 "inspect a corrupt file" "$FUSECTL" inspect "$tmp/bad.safetensors"
check 0 "inspect a fixture" "$FUSECTL" inspect "$FIX/st/sharded"
check 2 "gen-data bad mix" "$FUSECTL" gen-data --out "$tmp/x.jsonl" --mix poetry=1
check 2 "gen-data without --out" "$FUSECTL" gen-data
check 1 "gen-data to an unwritable place" "$FUSECTL" gen-data --out /nonexistent/dir/x.jsonl
check 0 "gen-data" "$FUSECTL" gen-data --out "$tmp/x.jsonl" --count 5
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
check 2 "train without --data" "$FUSECTL" train --model "$FIX/model/llama_gqa" --out "$tmp/t"
check 2 "train with --model and --config" "$FUSECTL" train --model "$FIX/model/llama_gqa" --config x --data x --out "$tmp/t"
check 2 "train bad --lr" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data x --out "$tmp/t" --lr fast
check 2 "train bad --schedule" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data x --out "$tmp/t" --schedule linear
check 1 "train a missing model" "$FUSECTL" train --model /nonexistent --data "$FIX/train/train_data.jsonl" --out "$tmp/t"
printf '{"input_ids":[1,2]}\n{"input_ids":[1,\n' > "$tmp/bad.jsonl"
check 1 "train on a bad line" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$tmp/bad.jsonl" --out "$tmp/t"
check 1 "train stopped after a step" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/t" --steps 2 --stop-after 1 --quiet
check 0 "train resumed" "$FUSECTL" train --model "$FIX/model/llama_gqa" --data "$FIX/train/train_data.jsonl" --out "$tmp/t" --steps 2 --resume --quiet
printf '{"model_type":"llama","hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":966}' > "$tmp/config.json"
"$FUSECTL" gen-data --out "$tmp/chat.jsonl" --count 8 >/dev/null 2>&1
check 0 "train from scratch on conversations" "$FUSECTL" train --config "$tmp/config.json" --tokenizer "$FIX/tok/trained_byte/tokenizer.json" --data "$tmp/chat.jsonl" --out "$tmp/s" --steps 2 --quiet
check 0 "eval the trained model" "$FUSECTL" eval -q --model "$tmp/s" --data "$tmp/e.jsonl" --max-new-tokens 2 --json "$tmp/r.json"
if ! grep -q '"models"' "$tmp/r.json" 2>/dev/null; then echo "FAIL: eval --json wrote no results"; fail=$((fail + 1)); fi
check 1 "eval a model without tokenizer.json" "$FUSECTL" eval -q --model "$FIX/model/llama_gqa" --data "$tmp/e.jsonl"
check 2 "train bad --chat-template" "$FUSECTL" train --config "$tmp/config.json" --tokenizer x --data x --out "$tmp/s" --chat-template vicuna
rm -rf "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
