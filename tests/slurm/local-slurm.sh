#!/bin/sh
# Starts a one-node Slurm on this host without systemd: munged, slurmctld and slurmd from
# Debian's packages (slurmctld slurmd slurm-client munge), all state under DIR.
#   local-slurm.sh start DIR    prints the environment to use it: SLURM_CONF=DIR/slurm.conf
#   local-slurm.sh stop DIR     stops the three daemons (by their pid files)
# The configuration is the smallest that runs jobs: one node with this host's CPUs,
# proctrack/linuxproc, task/none, select/cons_tres, munge on a private socket, ports from
# FC_SLURM_PORT (default 16817, and the next one). Addresses are 127.0.0.1, so a fresh machine
# whose host name does not resolve still works.
set -eu
cmd=${1:-}
D=${2:-}
[ -n "$cmd" ] && [ -n "$D" ] || { echo "usage: local-slurm.sh start|stop DIR" >&2; exit 2; }
stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }
if [ "$cmd" = stop ]; then
  stop_pid "$D/slurmd.pid"; stop_pid "$D/slurmctld.pid"; stop_pid "$D/munged.pid"
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: local-slurm.sh start|stop DIR" >&2; exit 2; }
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
