#!/usr/bin/env bash
# A single-node Slurm cluster on this host, for the sweep tests and CI:
#   scripts/slurm-local.sh start    install slurm-wlm + munge if missing (Debian, as root), write a
#                                   minimal slurm.conf (one node = this host), start munged (as
#                                   user munge), slurmctld and slurmd, wait until the node is idle
#   scripts/slurm-local.sh stop     stop the three daemons this script started
#   scripts/slurm-local.sh status   whether the cluster answers (sinfo), exit 0 if it does
# Not for production: no accounting, SlurmUser=root, no cgroups (proctrack/linuxproc).
# SLURM_LOCAL_PARTITION (default: debug) names the partition; logs are in /var/log/slurm-local/.
set -euo pipefail

PARTITION=${SLURM_LOCAL_PARTITION:-debug}
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm-local
SPOOL=/var/spool/slurm-local
RUN_DIR=/run/slurm-local
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

say() { echo "slurm-local: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs packages and starts daemons)"
    exit 1
  fi
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  if ! command -v apt-get >/dev/null; then
    say "slurm-wlm/munge are not installed and there is no apt-get to install them"
    exit 1
  fi
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge >/dev/null
}

write_conf() {
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$SPOOL/ctld" "$SPOOL/d" "$RUN_DIR"
  cat >"$CONF_DIR/slurm.conf" <<EOF
# written by reprogram's scripts/slurm-local.sh: one node (this host), no accounting
ClusterName=reprogram-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
# a requeued job may start again after cred_expire + 1 s (Slurm's default: 120 s)
AuthInfo=cred_expire=10
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if pgrep -x munged >/dev/null; then
    return
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key --force
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  chmod 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
}

cluster_idle() {
  sinfo -h -N -o '%T' 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'
}

start() {
  need_root
  if cluster_idle; then
    say "already running"
    sinfo
    return
  fi
  install_packages
  write_conf
  start_munge
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  local waited=0
  until cluster_idle; do
    if [ "$waited" -ge "$WAIT_S" ]; then
      say "the node did not become idle in ${WAIT_S} s; see $LOG_DIR/"
      sinfo -N -l >&2 || true
      exit 1
    fi
    # a node left down by an earlier run of this script comes back
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
    waited=$((waited + 1))
  done
  say "up in ${waited} s (partition $PARTITION)"
  sinfo
}

stop_daemon() {
  local name=$1 pidfile=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
  fi
  rm -f "$pidfile"
  say "stopped $name"
}

stop() {
  need_root
  stop_daemon slurmd "$RUN_DIR/slurmd.pid"
  stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
  stop_daemon munged /run/munge/munged.pid
}

status() {
  if cluster_idle; then
    sinfo
  else
    say "not running (sinfo does not answer with an available node)"
    exit 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
