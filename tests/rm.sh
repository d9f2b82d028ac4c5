#!/bin/sh
# fusectl rm: a finished job's rows and outputs go, an active one is refused unless --force
# (which cancels it first), a job sharing the directory keeps its files, --json parses.
# Usage: rm.sh FUSECTL (FC_BUILD names the build directory with the daemons).
FUSECTL="$1"
D="$FC_BUILD/daemons"
tmp=$(mktemp -d /tmp/fc-rm.XXXXXX)
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
check() { want=$1 what=$2; shift 2; "$@" > "$tmp/out" 2>&1; rc=$?; [ "$rc" -eq "$want" ] && ok || { bad "$what: exit $rc, wanted $want"; cat "$tmp/out"; }; }
S="$tmp/store"
mkdir -p "$S"
"$D/fusechat-coordinator" --run-dir "$tmp/run" --store "$S" --lease-timeout 5 2> "$tmp/coord.log" &
cpid=$!
"$D/fusechat-worker-test" --run-dir "$tmp/run" --id w1 --heartbeat 0.2 --store "$S" 2> "$tmp/w1.log" &
wpid=$!
EP="ipc://$tmp/run/coord.ipc"
job() { # name ms
  printf 'name: %s\nstore: %s\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: %s}}\n' "$1" "$S" "$2"
}
job done 10 > "$tmp/done.yaml"
job slow 60000 > "$tmp/slow.yaml"
sleep 0.5
check 0 "submit done" "$FUSECTL" submit --endpoint "$EP" "$tmp/done.yaml"
check 0 "watch done" "$FUSECTL" watch --endpoint "$EP" 1
[ -e "$S/done/a.out" ] && ok || bad "job 1 wrote no output"
# a second finished job of the same name: same directory, same declared output
check 0 "submit done again" "$FUSECTL" submit --endpoint "$EP" "$tmp/done.yaml"
check 0 "watch done again" "$FUSECTL" watch --endpoint "$EP" 2
check 0 "rm 1" "$FUSECTL" rm --endpoint "$EP" 1
grep -q "job 1 (done) removed; 0 outputs deleted" "$tmp/out" && ok || { bad "rm 1 said"; cat "$tmp/out"; }
[ -e "$S/done/a.out" ] && ok || bad "rm 1 took job 2's file"
check 1 "status of a removed job" "$FUSECTL" status --endpoint "$EP" 1
grep -q "no job 1" "$tmp/out" && ok || { bad "status 1 after rm"; cat "$tmp/out"; }
check 1 "rm of a removed job" "$FUSECTL" rm --endpoint "$EP" 1
grep -q "no job 1" "$tmp/out" && ok || { bad "rm 1 twice"; cat "$tmp/out"; }
check 0 "rm 2 --json" "$FUSECTL" rm --json --endpoint "$EP" 2
python3 - "$tmp/out" "$S" <<'PY' && ok || { bad "rm --json"; cat "$tmp/out"; }
import json, sys
r = json.load(open(sys.argv[1]))
assert r["job"] == 2 and r["name"] == "done", r
assert r["removed"] == [sys.argv[2] + "/done/a.out"], r
assert r["dir_removed"] is True and r["files_left"] is None and r["copies_left_on"] == [], r
PY
[ ! -e "$S/done" ] && ok || bad "job 2's directory is still there"
# what is left of it: the removal in the log; its ids are not given again
check 0 "logs of a removed job" "$FUSECTL" logs --endpoint "$EP" 2
grep -q "job.removed.*job 'done' removed by a client" "$tmp/out" && [ "$(wc -l < "$tmp/out")" -eq 1 ] && ok || { bad "logs 2"; cat "$tmp/out"; }
# an active job: refused, named; --force cancels then removes
check 0 "submit slow" "$FUSECTL" submit --endpoint "$EP" "$tmp/slow.yaml"
sleep 0.5
check 1 "rm a running job" "$FUSECTL" rm --endpoint "$EP" 3
grep -q "job 3 (slow) is running; cancel it first" "$tmp/out" && ok || { bad "rm 3 refusal"; cat "$tmp/out"; }
check 0 "status after the refusal" "$FUSECTL" status --endpoint "$EP" 3
check 0 "rm --force" "$FUSECTL" rm --force --endpoint "$EP" 3
grep -q "job 3 cancelled" "$tmp/out" && grep -q "job 3 (slow) removed" "$tmp/out" && ok || { bad "rm --force said"; cat "$tmp/out"; }
check 0 "submit after every job was removed" "$FUSECTL" submit --endpoint "$EP" "$tmp/done.yaml"
grep -q "^job 4" "$tmp/out" && ok || { bad "a removed job's id given again"; cat "$tmp/out"; }
check 0 "status 4" "$FUSECTL" status --json --endpoint "$EP" 4
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["jobs"][0]["tasks"][0]["id"] == 4' "$tmp/out" && ok || { bad "a removed task id given again"; cat "$tmp/out"; }
check 0 "watch 4" "$FUSECTL" watch --endpoint "$EP" 4
check 0 "rm 4" "$FUSECTL" rm --endpoint "$EP" 4
check 0 "list" "$FUSECTL" list --json --endpoint "$EP"
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["jobs"] == []' "$tmp/out" && ok || { bad "jobs left"; cat "$tmp/out"; }
check 2 "rm without a job" "$FUSECTL" rm --endpoint "$EP"
check 2 "rm of a bad id" "$FUSECTL" rm --endpoint "$EP" x
grep -q "job=1 .*job 1 (done) removed" "$tmp/coord.log" && ok || { bad "coordinator log"; grep removed "$tmp/coord.log"; }
kill "$wpid" "$cpid" 2>/dev/null
wait "$wpid" "$cpid" 2>/dev/null
rm -rf "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
