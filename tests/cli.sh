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
check 2 "merge without --out" "$FUSECTL" merge "$FIX/merge/sce.yaml"
check 1 "merge a missing config" "$FUSECTL" merge "$tmp/none.yaml" --out "$tmp/m"
printf 'merge_method: ties\nmodels: [\n' > "$tmp/bad.yaml"
check 1 "merge a broken config" "$FUSECTL" merge "$tmp/bad.yaml" --out "$tmp/m"
check 2 "merge an unknown method" "$FUSECTL" merge --method nope --base "$FIX/merge/base" --models "$FIX/merge/m1" --out "$tmp/m"
check 1 "merge mismatched models" "$FUSECTL" merge --method ties --base "$FIX/merge/base" --models "$FIX/st/sharded" --out "$tmp/m"
check 0 "merge fixtures (short form)" "$FUSECTL" merge -q --method sce --base "$FIX/merge/base" --models "$FIX/merge/m1" "$FIX/merge/m2" --param select_topk=0.3 --out "$tmp/m"
rm -rf "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
