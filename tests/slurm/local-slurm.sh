#!/bin/sh
# Starts a one-node Slurm on this host without systemd: munged, slurmctld and slurmd from
# Debian's packages (slurmctld slurmd slurm-client munge), all state under DIR.
#   local-slurm.sh start DIR    prints the environment to use it: SLURM_CONF=DIR/slurm.conf
#   local-slurm.sh stop DIR     stops the three daemons (by their pid files)
#   local-slurm.sh sweep DIR    kills every process left that belongs to DIR: its cwd, command
#                               line or environment names DIR, or a pid file under DIR holds it
#                               (job steps and workers outlive a slurmd that was stopped first)
#   local-slurm.sh guard PID DIR   in the background, in its own session: once PID is gone
#                               (even by SIGKILL, when its own clean-up never ran), sweep DIR
#                               and remove it (unless KEEP is set)
# The configuration is the smallest that runs jobs: one node with this host's CPUs,
# proctrack/linuxproc, task/none, select/cons_tres, munge on a private socket, ports from
# FC_SLURM_PORT (default 16817, and the next one). Addresses are 127.0.0.1, so a fresh machine
# whose host name does not resolve still works.
set -eu
cmd=${1:-}
D=${2:-}
[ -n "$cmd" ] && [ -n "$D" ] || { echo "usage: local-slurm.sh start|stop|sweep DIR | guard PID DIR" >&2; exit 2; }
stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }
# The live pids that belong to DIR, except this script's own processes (its command line names
# DIR too, and so do the subshells and the grep it forks). One grep over /proc, not one per pid.
owned() {
  { for pf in $(find "$D" -name '*.pid' 2>/dev/null); do cat "$pf" 2>/dev/null; echo; done
    grep -laF -- "$D" /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
    find /proc/[0-9]*/cwd -maxdepth 0 \( -lname "$D" -o -lname "$D/*" \) 2>/dev/null | cut -d/ -f3
  } | sort -u | while read -r p; do
    [ -n "$p" ] && [ "$p" != $$ ] && [ -d "/proc/$p" ] || continue
    grep -aqF local-slurm.sh "/proc/$p/cmdline" 2>/dev/null || echo "$p"
  done
}
sweep() {
  case "$D" in /tmp/?*) ;; *) echo "local-slurm: sweep only under /tmp, not '$D'" >&2; return 2 ;; esac
  pids=$(owned)
  [ -n "$pids" ] || return 0
  kill $pids 2>/dev/null
  # SIGTERM first so daemons hand their tasks back; whatever ignores it for 3 s is killed
  i=0
  while [ $i -lt 15 ] && [ -n "$(owned)" ]; do sleep 0.2; i=$((i + 1)); done
  i=0
  while [ $i -lt 10 ] && pids=$(owned) && [ -n "$pids" ]; do kill -9 $pids 2>/dev/null; sleep 0.2; i=$((i + 1)); done
  return 0
}
case "$cmd" in
  stop)
    stop_pid "$D/slurmd.pid"; stop_pid "$D/slurmctld.pid"; stop_pid "$D/munged.pid"
    exit 0 ;;
  sweep) sweep; exit 0 ;;
  guard)
    [ $# -eq 3 ] || { echo "usage: local-slurm.sh guard PID DIR" >&2; exit 2; }
    D=$3
    while kill -0 "$2" 2>/dev/null; do sleep 1; done
    sweep
    [ -z "${KEEP:-}" ] || exit 0
    # a daemon killed in the middle of writing its state may leave a file after rm: once more
    i=0
    while [ -e "$D" ] && [ $i -lt 5 ]; do rm -rf "$D" 2>/dev/null || { sleep 1; sweep; }; i=$((i + 1)); done
    exit 0 ;;
  start) ;;
  *) echo "usage: local-slurm.sh start|stop|sweep DIR | guard PID DIR" >&2; exit 2 ;;
esac
for p in munged slurmctld slurmd sbatch; do
  command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] ||
    { echo "local-slurm: $p is missing: run FUSECHAT_SETUP_SLURM=1 tools/setup.sh" >&2; exit 1; }
done
PATH="$PATH:/usr/sbin"
mkdir -p "$D/state" "$D/spool"
if [ ! -f "$D/munge.key" ]; then
  if [ -r /etc/munge/munge.key ]; then cp /etc/munge/munge.key "$D/munge.key"
  else dd if=/dev/urandom of="$D/munge.key" bs=1024 count=1 2>/dev/null; fi
fi
chmod 0400 "$D/munge.key"
munged --force --socket="$D/munge.sock" --key-file="$D/munge.key" --log-file="$D/munged.log" \
  --pid-file="$D/munged.pid" --seed-file="$D/munged.seed"
port=${FC_SLURM_PORT:-16817}
host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
user=$(id -un)
cat >"$D/slurm.conf" <<EOC
ClusterName=fusechat-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=$user
AuthType=auth/munge
AuthInfo=socket=$D/munge.sock
CredType=cred/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait=5
SchedulerType=sched/backfill
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOC
export SLURM_CONF="$D/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
# ready when the node takes jobs
i=0
while [ $i -lt 100 ]; do
  st=$(sinfo -h -o %t 2>/dev/null || true)
  case "$st" in idle*|mix*|alloc*) echo "SLURM_CONF=$SLURM_CONF"; exit 0 ;; esac
  sleep 0.2; i=$((i + 1))
done
echo "local-slurm: the node did not come up (state '$st'); see $D/slurmctld.log and $D/slurmd.log" >&2
exit 1
