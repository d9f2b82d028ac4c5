#!/bin/sh
# deploy/example-cluster/README.md followed step by step on this host: machine A, machine B and
# the client are three directories (A and B each with its own /etc/fusechat and store), the
# daemons talk TCP + CURVE on 127.0.0.1. Every command the test runs as a guide step is first
# found verbatim in the guide, then run with the machine's directory in place of / ("sudo"
# dropped, ssh copies done with cp); the daemons run as systemd would run the installed units:
# each unit's ExecStart with its EnvironmentFile= files (the guide's env files). The job is
# the example job.yaml on tiny models (sizes made small). Its merged model must be byte for
# byte the one `fusectl run --local` makes on one machine.
# Usage: guide.sh SRCDIR BUILDDIR
SRC="$1"
BUILD="$2"
GUIDE="$SRC/deploy/example-cluster/README.md"
FUSECTL="$BUILD/tools/fusectl"
tmp=$(mktemp -d /tmp/fc-guide.XXXXXX)
A="$tmp/gpu-a" B="$tmp/cpu-b" C="$tmp/alice"
pass=0 fail=0 pids=""
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
finish() {
  for p in $pids; do kill "$p" 2>/dev/null; done
  for p in $pids; do wait "$p" 2>/dev/null; done
  if [ "$fail" -eq 0 ] && [ -z "${FC_KEEP:-}" ]; then rm -rf "$tmp"; else echo "logs in $tmp"; fi
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit $?
}
port=$((20000 + $$ % 20000))
# A command of the guide, run on machine M (its directory): it must be in the guide as written.
step() { # M command
  m="$1" cmd="$2"
  if ! grep -qF -- "$cmd" "$GUIDE"; then bad "the guide no longer says: $cmd"; return; fi
  owner=""
  [ "$(id -u)" -eq 0 ] && id fusechat >/dev/null 2>&1 && owner="--owner fusechat " # else: as the caller
  run=$(printf '%s\n' "$cmd" | sed -e 's/^sudo //; s/&& sudo /\&\& /g' -e "s#--owner fusechat #$owner#" \
    -e "s#/etc/fusechat#$m/etc/fusechat#g; s#/srv/fusechat#$m/srv/fusechat#g; s#~/#$C/#g" \
    -e "s#deploy/example-cluster#$SRC/deploy/example-cluster#g" -e "s#^fusectl #$FUSECTL #; s#&& fusectl #\\&\\& $FUSECTL #")
  if sh -c "$run" > "$tmp/step.out" 2>&1; then ok; else bad "guide step on $(basename "$m"): $cmd"; cat "$tmp/step.out"; fi
}
# The guide's key copies between machines: ssh HOST [sudo] cat FILE | ssh HOST sudo tee FILE, or
# into the client's files; HOST names map to the directories.
dir_of() { case "$1" in gpu-a.example) echo "$A" ;; cpu-b.example) echo "$B" ;; *) echo "$C" ;; esac; }
copy() { # the guide's line
  if ! grep -qF -- "$1" "$GUIDE"; then bad "the guide no longer says: $1"; return; fi
  set -- $1
  if [ "$1" = ssh ]; then from=$(dir_of "$2"); shift 2; [ "$1" = sudo ] && shift; file="$from$2"; shift 2
  else file=$(printf '%s' "$2" | sed "s#~/#$C/#"); shift 2; fi
  if [ "$1" = "|" ]; then to=$(dir_of "$3")$6; else to=$(printf '%s' "$2" | sed "s#~/#$C/#"); fi
  cp "$file" "$to" && ok || bad "copy $file -> $to"
}
# A unit as systemd starts it: its EnvironmentFile= lines read, its ExecStart run with
# ${VAR} as one word and $VAR split, %H the machine's host name, %i the instance.
start_unit() { # M host unit[@instance]
  m="$1" host="$2" unit="$3" inst=""
  case "$unit" in *@*) inst="${unit#*@}"; file="$BUILD/deploy/${unit%@*}@.service" ;; *) file="$BUILD/deploy/$unit.service" ;; esac
  [ -f "$file" ] || { bad "no unit $file"; return; }
  sysconf=$(sed -n 's#^EnvironmentFile=\(.*\)/fusechat/.*#\1#p' "$file" | head -1)
  exec_line=$(awk '/^ExecStart=/{on=1} on{line = line $0; if (!/\\$/) {print line; exit} sub(/\\$/, "", line)}' "$file" |
    sed -e 's/^ExecStart=//' -e "s#%H#$host#g; s#%i#$inst#g" -e "s#^[^ ]*/fusechat-#$BUILD/daemons/fusechat-#" \
      -e 's/\${\([A-Z_]*\)}/"${\1}"/g')
  (
    for envf in $(sed -n 's#^EnvironmentFile=##p' "$file" | sed "s#%i#$inst#g; s#^$sysconf#$m/etc#"); do
      while IFS= read -r line; do
        case "$line" in '#'* | '') continue ;; esac
        export "$line"
      done < "$envf"
    done
    export STATE_DIRECTORY="$m/var/lib/fusechat"
    mkdir -p "$STATE_DIRECTORY" "$m/log"
    set -f # systemd does not glob: tcp://HOST:* stays as it is
    eval "exec $exec_line" 2> "$m/log/$unit.log"
  ) &
  pids="$pids $!"
}

# ---- the models and data, at the same paths on both machines ----
"$BUILD/tests/test_stage" --make-models "$tmp/models" > /dev/null 2>&1 || { bad "making the tiny models"; finish; }
for m in "$A" "$B"; do
  mkdir -p "$m/srv/fusechat/models" "$m/srv/fusechat/data"
  cp -r "$tmp/models/pivot" "$m/srv/fusechat/models/pivot"
  cp -r "$tmp/models/source" "$m/srv/fusechat/models/s1"
  cp -r "$tmp/models/source" "$m/srv/fusechat/models/s2"
  "$FUSECTL" gen-data --out "$m/srv/fusechat/data/train.jsonl" --count 24 --seed 3 > /dev/null
  "$FUSECTL" gen-data --out "$m/srv/fusechat/data/eval.jsonl" --count 8 --split eval --seed 5 > /dev/null
done

# ---- 1. the directories tmpfiles.d makes (the install itself: this build) ----
for m in "$A" "$B"; do
  grep '^d ' "$SRC/deploy/tmpfiles-fusechat.conf" | while read -r _ path mode _; do
    mkdir -p "$m$path" && chmod "$mode" "$m$path"
  done
done
mkdir -p "$C"

# ---- 2. keys, each made where it is used ----
step "$A" "sudo fusectl keygen --dir /etc/fusechat/keys --owner fusechat coordinator"
step "$A" "sudo fusectl keygen --dir /etc/fusechat/keys --owner fusechat gpu-a"
step "$A" "sudo install -d -m 0755 /etc/fusechat/keys/allowed"
step "$A" "sudo cp /etc/fusechat/keys/gpu-a.pub /etc/fusechat/keys/allowed/"
step "$B" "sudo fusectl keygen --dir /etc/fusechat/keys --owner fusechat cpu-b"
step "$C" "mkdir -p ~/.config/fusechat && fusectl keygen --dir ~/.config/fusechat alice"
copy "ssh cpu-b.example sudo cat /etc/fusechat/keys/cpu-b.pub | ssh gpu-a.example sudo tee /etc/fusechat/keys/allowed/cpu-b.pub"
copy "cat ~/.config/fusechat/alice.pub | ssh gpu-a.example sudo tee /etc/fusechat/keys/allowed/alice.pub"
copy "ssh gpu-a.example sudo cat /etc/fusechat/keys/coordinator.pub | ssh cpu-b.example sudo tee /etc/fusechat/keys/coordinator.pub"
copy "ssh gpu-a.example sudo cat /etc/fusechat/keys/coordinator.pub > ~/.config/fusechat/coordinator.pub"
copy "ssh gpu-a.example sudo cat /etc/fusechat/keys/gpu-a.pub > ~/.config/fusechat/gpu-a.pub"
# only public keys travelled: no secret key outside the machine that made it
[ "$(find "$A" "$B" "$C" -name '*.key' | sed "s#^$tmp/##" | sort | tr '\n' ' ')" = \
  "alice/.config/fusechat/alice.key cpu-b/etc/fusechat/keys/cpu-b.key gpu-a/etc/fusechat/keys/coordinator.key gpu-a/etc/fusechat/keys/gpu-a.key " ] &&
  ok || bad "secret keys where they should not be: $(find "$tmp" -name '*.key')"
[ "$(stat -c %a "$C/.config/fusechat/alice.key")" = 600 ] && ok || bad "alice.key is not 0600"

# ---- 4. configuration and start ----
step "$A" "sudo cp deploy/example-cluster/machine-a/*.env /etc/fusechat/"
step "$B" "sudo cp deploy/example-cluster/machine-b/*.env /etc/fusechat/"
# this host for both machine names, free ports for the guide's, one thread per daemon
for m in "$A" "$B"; do
  sed -i -e "s#/etc/fusechat#$m/etc/fusechat#g; s#/srv/fusechat#$m/srv/fusechat#g" \
    -e "s#gpu-a.example#127.0.0.1#g; s#0.0.0.0#127.0.0.1#g; s/^THREADS=.*/THREADS=1/" \
    -e "s/:5555/:$port/g; s/:5556/:$((port + 1))/g; s/:5601/:$((port + 2))/g; s/:5602/:$((port + 3))/g; s/:5603/:$((port + 4))/g" \
    "$m"/etc/fusechat/*.env
done
grep -qF "sudo systemctl enable --now fusechat-coordinator fusechat-logits@pivot fusechat-logits@s1 fusechat-logits@s2" "$GUIDE" &&
  grep -qF "sudo systemctl enable --now fusechat-align fusechat-train fusechat-merge fusechat-eval" "$GUIDE" && ok ||
  bad "the guide starts other units"
start_unit "$A" gpu-a fusechat-coordinator
for u in fusechat-logits@pivot fusechat-logits@s1 fusechat-logits@s2; do start_unit "$A" gpu-a "$u"; done
for u in fusechat-align fusechat-train fusechat-merge fusechat-eval; do start_unit "$B" cpu-b "$u"; done

# ---- 5. a job from the client ----
export FUSECHAT_ENDPOINT="tcp://127.0.0.1:$port"
export FUSECHAT_CURVE_KEY="$C/.config/fusechat/alice.key" FUSECHAT_CURVE_SERVER="$C/.config/fusechat/coordinator.pub"
grep -qF "export FUSECHAT_CURVE_KEY=~/.config/fusechat/alice.key FUSECHAT_CURVE_SERVER=~/.config/fusechat/coordinator.pub" "$GUIDE" &&
  ok || bad "the guide sets other client keys"
n=0
# Seven workers, and A's three counted as sharing the store: a daemon that registered before the
# coordinator wrote its sentinel re-registers on the ack, so "shared" can trail the count a moment.
until [ "$("$FUSECTL" workers --json 2>/dev/null | python3 -c 'import json,sys; w = json.load(sys.stdin)["workers"]; print(len(w), sum(x.get("store") == "shared" for x in w))' 2>/dev/null)" = "7 3" ] || [ $n -ge 150 ]; do
  sleep 0.2; n=$((n + 1))
done
step "$C" "fusectl workers"
grep -c "shared" "$tmp/step.out" | grep -qx 3 && grep -c "separate" "$tmp/step.out" | grep -qx 4 && ok ||
  { bad "workers: wanted A's three daemons shared and B's four separate"; cat "$tmp/step.out"; }
# the example job with the machines' paths and a tiny model's sizes
sed -e 's/^shards: .*/shards: 2/; s/^top_k: .*/top_k: 4/' \
  -e 's/^training: .*/training: {epochs: 1, lr: 0.003, batch_size: 2, seq_len: 128, steps: 6, checkpoint_every: 3}/' \
  -e 's/^baselines: .*/baselines: {sft: false, merges: []}/' "$SRC/deploy/example-cluster/job.yaml" > "$tmp/job-small.yaml"
sed -e "s#/srv/fusechat/#$A/srv/fusechat/#g" "$tmp/job-small.yaml" > "$C/job.yaml"
cd "$C" || finish
step "$C" "fusectl submit job.yaml"
step "$C" "fusectl watch 1 && fusectl report 1"
grep -q "merged-sce" "$tmp/step.out" && ok || { bad "no report"; cat "$tmp/step.out"; }
merged_b="$B/srv/fusechat/store/fuse-demo/merged/model.safetensors"
[ -f "$merged_b" ] && [ ! -e "$A/srv/fusechat/store/fuse-demo/merged" ] && ok || bad "the merge did not run on B's store"
grep -q "fetched" "$B/log/fusechat-align.log" && ok || bad "B's align daemon fetched nothing"
# a direct query to a logits daemon on A with its own key
FUSECHAT_CURVE_SERVER="$C/.config/fusechat/gpu-a.pub" "$FUSECTL" query --endpoint "tcp://127.0.0.1:$((port + 3))" \
  --text "Hi" --chat --last > "$tmp/q.out" 2>&1 && ok || { bad "query"; cat "$tmp/q.out"; }
grep -qF 'FUSECHAT_CURVE_SERVER=~/.config/fusechat/gpu-a.pub fusectl query --endpoint tcp://gpu-a.example:5602 --text "Hi" --chat --last' "$GUIDE" && ok || bad "the guide queries otherwise"

# ---- the same job on one machine: the same merged bytes ----
sed -e "s#/srv/fusechat/store#$tmp/one/store#; s#/srv/fusechat/#$A/srv/fusechat/#g" "$tmp/job-small.yaml" > "$tmp/one.yaml"
"$FUSECTL" run --local --threads 1 --quiet --run-dir "$tmp/one/run" "$tmp/one.yaml" > "$tmp/one.out" 2>&1 || { bad "one-machine run"; tail "$tmp/one.out"; }
a=$(sha256sum < "$merged_b" | cut -c1-64)
b=$(sha256sum < "$tmp/one/store/fuse-demo/merged/model.safetensors" | cut -c1-64)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "two machines merged $a, one machine $b"
# fusectl up from the same session (the cluster's keys still in the environment) on this machine
# (and its coordinator's metrics endpoint, passed through)
"$FUSECTL" up --run-dir "$tmp/up" --test-workers 1 --metrics "127.0.0.1:$((port + 5))" > "$tmp/up.out" 2>&1 && ok ||
  { bad "fusectl up with CURVE keys in the environment"; cat "$tmp/up.out"; }
live=$(python3 "$SRC/tests/metric.py" "$((port + 5))" fusechat_workers_live 2>&1)
[ "$live" != missing ] && [ -n "$live" ] && ok || bad "fusectl up --metrics: fusechat_workers_live is $live"
"$FUSECTL" down --run-dir "$tmp/up" > /dev/null 2>&1
step "$C" "fusectl rm 1"
grep -q "job 1 (fuse-demo) removed" "$tmp/step.out" && ! grep -q "files left" "$tmp/step.out" &&
  grep -q "copies left in the separate store of cpu-b-merge" "$tmp/step.out" && [ ! -e "$A/srv/fusechat/store/fuse-demo" ] &&
  ok || { bad "rm on the two-machine job"; cat "$tmp/step.out"; ls "$A/srv/fusechat/store/fuse-demo"; }
finish
