#!/bin/sh
# Observability: the coordinator's /metrics (parsed as the Prometheus text format and checked
# against two known jobs) and every fusectl --json output (parsed as JSON).
# Usage: obs.sh FUSECTL (FC_BUILD names the build directory with the daemons).
FUSECTL="$1"
D="$FC_BUILD/daemons"
tmp=$(mktemp -d /tmp/fc-obs.XXXXXX)
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
check() { want=$1 what=$2; shift 2; "$@" > "$tmp/out" 2>&1; rc=$?; [ "$rc" -eq "$want" ] && ok || { bad "$what: exit $rc, wanted $want"; cat "$tmp/out"; }; }
port=$((20000 + $$ % 20000))
check 2 "--metrics without a port" "$D/fusechat-coordinator" --metrics 127.0.0.1
check 2 "--metrics with a host name" "$D/fusechat-coordinator" --metrics localhost:9464
mkdir -p "$tmp/store" "$tmp/storeb"
"$D/fusechat-coordinator" --run-dir "$tmp/run" --lease-timeout 5 --metrics "127.0.0.1:$port" --store "$tmp/store" 2> "$tmp/coord.log" &
cpid=$!
"$D/fusechat-worker-test" --run-dir "$tmp/run" --id w1 --heartbeat 0.2 2> "$tmp/w1.log" &
wpid=$!
EP="ipc://$tmp/run/coord.ipc"
printf 'x\n' > "$tmp/in"
printf 'name: good\nstore: %s/store\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 50}}\n  - {name: b, kind: checksum, inputs: [%s/in], outputs: [b.out], params: {ms: 10}}\n' "$tmp" "$tmp" > "$tmp/good.yaml"
printf 'name: bad\nstore: %s/store\nmax_attempts: 2\ntasks:\n  - {name: c, kind: sleep, outputs: [c.out], params: {ms: 10, fail: 1}}\n' "$tmp" > "$tmp/bad.yaml"
sleep 0.5
check 0 "submit good" "$FUSECTL" submit --endpoint "$EP" "$tmp/good.yaml"
check 0 "watch --json good" "$FUSECTL" watch --json --endpoint "$EP" 1
cp "$tmp/out" "$tmp/watch.jsonl"
check 0 "submit bad" "$FUSECTL" submit --endpoint "$EP" "$tmp/bad.yaml"
check 1 "watch bad" "$FUSECTL" watch --endpoint "$EP" 2
jsonl() { # what file: every line parses as JSON
  python3 -c 'import json,sys
n=0
for l in open(sys.argv[1]):
    json.loads(l); n+=1
sys.exit(0 if n else 1)' "$2" && ok || { bad "$1: not JSON lines"; cat "$2"; }
}
jsonl "watch --json" "$tmp/watch.jsonl"
for cmd in "list" "workers" "status" "artifacts 1"; do
  # shellcheck disable=SC2086
  if "$FUSECTL" $cmd --json --endpoint "$EP" > "$tmp/j" 2>&1 && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$tmp/j"; then
    ok
  else
    bad "$cmd --json does not parse"; cat "$tmp/j"
  fi
done
# attempts are attempts: a task done at its first try used 1 of 3, a task that failed twice 2 of 2
python3 - "$FUSECTL" "$EP" <<'PY' > "$tmp/att.out" 2>&1 && ok || { bad "attempts"; cat "$tmp/att.out"; }
import json, subprocess, sys
def status(job, *flags):
    return subprocess.run([sys.argv[1], "status", *flags, "--endpoint", sys.argv[2], str(job)], check=True,
                          capture_output=True, text=True).stdout
good = json.loads(status(1, "--json"))["jobs"][0]["tasks"]
bad = json.loads(status(2, "--json"))["jobs"][0]["tasks"]
assert [(t["state"], t["attempts"], t["failed_attempts"], t["max_attempts"]) for t in good] == [("done", 1, 0, 3)] * 2, good
assert [(t["state"], t["attempts"], t["failed_attempts"]) for t in bad] == [("failed", 2, 2)], bad
rows = [l.split() for l in status(1).splitlines() if l.strip().split()[0].isdigit()]
assert [r[3] for r in rows] == ["1/3", "1/3"], status(1)
PY
"$FUSECTL" logs --json --endpoint "$EP" 1 > "$tmp/logs.jsonl" 2>&1
jsonl "logs --json" "$tmp/logs.jsonl"
# /metrics: fetched with a plain socket, parsed line by line, checked against the two jobs
python3 - "$port" <<'PY' > "$tmp/metrics.out" 2>&1 && ok || { bad "metrics"; cat "$tmp/metrics.out"; }
import re, socket, sys
def get(path):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b: break
        data += b
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body.decode()
head, body = get("/nothing")
assert head.startswith("HTTP/1.1 404"), head
head, body = get("/metrics")
assert head.startswith("HTTP/1.1 200"), head
assert "text/plain; version=0.0.4" in head, head
name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
sample = re.compile(r"^(%s)(\{(%s)(,%s)*\})? (\S+)$" % (name, label, label))
types, vals = {}, {}
for line in body.splitlines():
    if line.startswith("# HELP "):
        assert re.match(r"^# HELP %s .+$" % name, line), line
    elif line.startswith("# TYPE "):
        m = re.match(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % name, line)
        assert m, line
        assert m.group(1) not in types, "TYPE twice: " + line
        types[m.group(1)] = m.group(2)
    else:
        m = sample.match(line)
        assert m, "bad sample line: " + line
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in types or base in types, "sample before its TYPE: " + line
        float(m.group(5))
        key = m.group(1) + (m.group(2) or "")
        assert key not in vals, "sample twice: " + line
        vals[key] = float(m.group(5))
want = {
    'fusechat_jobs{state="done"}': 1, 'fusechat_jobs{state="failed"}': 1, 'fusechat_jobs{state="running"}': 0,
    'fusechat_tasks{state="done"}': 2, 'fusechat_tasks{state="failed"}': 1, 'fusechat_leases': 0,
    'fusechat_task_retries_total': 1, 'fusechat_workers{kind="sleep"}': 1, 'fusechat_workers{kind="checksum"}': 1,
    'fusechat_workers_live': 1,
    'fusechat_task_duration_seconds_count{kind="sleep"}': 1, 'fusechat_task_duration_seconds_count{kind="checksum"}': 1,
    'fusechat_task_duration_seconds_bucket{kind="sleep",le="+Inf"}': 1,
}
for k, v in want.items():
    assert vals.get(k) == v, "%s = %s, wanted %s" % (k, vals.get(k), v)
assert types["fusechat_task_duration_seconds"] == "histogram"
assert types["fusechat_task_retries_total"] == "counter"
s = vals['fusechat_task_duration_seconds_sum{kind="sleep"}']
assert 0.04 <= s < 5, "sleep task took %s s" % s
# buckets are cumulative and end at the count
b = sorted((float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in vals.items()
           if k.startswith('fusechat_task_duration_seconds_bucket{kind="sleep"'))
assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), b
PY
check 2 "plot without a job" "$FUSECTL" plot --endpoint "$EP"
check 1 "plot a job without train tasks" "$FUSECTL" plot --endpoint "$EP" --out "$tmp" 1
grep -q "no loss curve drawn for job 1" "$tmp/out" && ok || bad "plot's message: $(cat "$tmp/out")"
grep -q 'job=1 task=1 msg="event task.leased' "$tmp/coord.log" && ok || { bad "coordinator log fields job= task="; head "$tmp/coord.log"; }
grep -q 'job=1 task=1 worker=w1 msg="task (sleep) done' "$tmp/w1.log" && ok || { bad "worker log fields"; cat "$tmp/w1.log"; }
# failures stand out: a failed attempt is a warning, a job that failed for good an error
grep -q 'level=warn comp=coordinator job=2 task=3 msg="event task.retry' "$tmp/coord.log" && ok || { bad "a retry is not a warning"; grep "job=2" "$tmp/coord.log"; }
grep -q 'level=error comp=coordinator job=2 msg="event job.failed' "$tmp/coord.log" && ok || { bad "a failed job is not an error"; grep "job=2" "$tmp/coord.log"; }
# systemd's watchdog: pinged while idle and while the task reports progress, withheld while a
# task is silent for half the period (2 s here), pinged again once the worker is idle
kill "$wpid" 2>/dev/null
wait "$wpid" 2>/dev/null
python3 - "$tmp/notify.sock" "$tmp/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.5)
end = time.time() + 12
with open(sys.argv[2], "w") as out:
    while time.time() < end:
        try:
            d = s.recv(4096).decode()
        except socket.timeout:
            continue
        for line in d.splitlines():
            out.write("%.3f %s\n" % (time.time(), line))
        out.flush()
PY
npid=$!
# the listener must be bound before the worker's READY=1 (a datagram to no socket is lost)
n=0; while [ ! -S "$tmp/notify.sock" ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
NOTIFY_SOCKET="$tmp/notify.sock" WATCHDOG_USEC=2000000 "$D/fusechat-worker-test" --run-dir "$tmp/run" --id w2 --heartbeat 0.2 2> "$tmp/w2.log" &
wpid=$!
sleep 2
printf 'name: wedged\nstore: %s/store\ntasks:\n  - {name: h, kind: sleep, outputs: [h.out], params: {ms: 4000, silent: 1}}\n' "$tmp" > "$tmp/wedged.yaml"
check 0 "submit wedged" "$FUSECTL" submit --endpoint "$EP" "$tmp/wedged.yaml"
check 0 "watch wedged" "$FUSECTL" watch --endpoint "$EP" 3
wait "$npid"
python3 - "$tmp/notify.log" <<'PY' > "$tmp/wd.out" 2>&1 && ok || { bad "watchdog pings"; cat "$tmp/wd.out" "$tmp/notify.log"; }
import sys
lines = [l.split(" ", 1) for l in open(sys.argv[1]).read().splitlines()]
assert any(m == "READY=1" for _, m in lines), "no READY=1"
t = [float(ts) for ts, m in lines if m == "WATCHDOG=1"]
gaps = [(b - a, a) for a, b in zip(t, t[1:])]
big = [g for g in gaps if g[0] > 2.5]
assert len(big) == 1, "wanted one long silence (the silent task), got %s" % big
assert sum(1 for x in t if x < big[0][1]) >= 3, "too few pings before the task"
assert sum(1 for x in t if x > big[0][1] + big[0][0] - 0.01) >= 2, "no pings after the task"
PY
grep -q "withholding the watchdog ping" "$tmp/w2.log" && ok || { bad "no stall warning"; cat "$tmp/w2.log"; }
kill "$wpid" 2>/dev/null
wait "$wpid" 2>/dev/null
# bytes between stores: wa (the coordinator's store) makes one.out, then holds hog; wb (its own
# store) runs two, fetching one.out from wa; /metrics counts the bytes wb downloaded
metric() { python3 "$(dirname "$0")/metric.py" "$port" "$1"; }
[ "$(metric fusechat_artifact_fetched_bytes_total)" = 0 ] && ok || bad "fetched bytes before any fetch: $(metric fusechat_artifact_fetched_bytes_total)"
"$D/fusechat-worker-test" --run-dir "$tmp/run" --id wa --heartbeat 0.2 --store "$tmp/store" --artifacts "tcp://127.0.0.1:*" 2> "$tmp/wa.log" &
wapid=$!
printf 'name: fetch\nstore: %s/store\ntasks:\n  - {name: one, kind: sleep, outputs: [one.out], params: {ms: 10}}\n  - {name: hog, kind: sleep, deps: [one], outputs: [hog.out], params: {ms: 3000}}\n  - {name: two, kind: checksum, deps: [one], inputs: [%s/store/fetch/one.out], outputs: [two.out], params: {ms: 10}}\n' "$tmp" "$tmp" > "$tmp/fetch.yaml"
check 0 "submit fetch" "$FUSECTL" submit --endpoint "$EP" "$tmp/fetch.yaml"
n=0; until "$FUSECTL" status --endpoint "$EP" 4 2>/dev/null | grep -q "hog  *running" || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
"$D/fusechat-worker-test" --run-dir "$tmp/run" --id wb --heartbeat 0.2 --store "$tmp/storeb" 2> "$tmp/wb.log" &
wbpid=$!
check 0 "watch fetch" "$FUSECTL" watch --endpoint "$EP" 4
size=$(stat -c %s "$tmp/store/fetch/one.out")
[ -s "$tmp/storeb/fetch/two.out" ] && grep -q "fetched" "$tmp/wb.log" && ok || { bad "two did not run on wb with a fetched input"; cat "$tmp/wb.log"; }
got=$(metric fusechat_artifact_fetched_bytes_total)
[ "$got" = "$size" ] && ok || bad "fetched bytes $got, wanted one.out's $size"
[ "$(metric fusechat_artifact_fetches_total)" = 1 ] && ok || bad "fetches: $(metric fusechat_artifact_fetches_total)"
kill "$wapid" "$wbpid" "$cpid" 2>/dev/null
wait "$wapid" "$wbpid" "$cpid" 2>/dev/null
rm -rf "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
