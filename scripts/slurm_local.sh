#!/usr/bin/env bash
# slurm_local.sh: a one-node Slurm cluster on this machine, for trying and testing the sbatch
# scripts in slurm/ (a one-node cluster on localhost: the daemons started by hand, no systemd).
#   scripts/slurm_local.sh start    install slurm-wlm + munge if missing, write
#                                   /etc/slurm/slurm.conf, start munged, slurmctld, slurmd, wait
#                                   until sinfo shows the node idle (prints 'started', or
#                                   'already running' when it was up; idempotent)
#   scripts/slurm_local.sh stop     stop the daemons by their pid files (idempotent)
#   scripts/slurm_local.sh status   daemons and sinfo; exit 0 only when the node is usable
# Needs root or password-less sudo (exit 2 otherwise; 3: packages not installable, 4: a daemon
# did not come up). An /etc/slurm/slurm.conf that this
# script did not write is never replaced (exit 2): this is for a scratch machine, not a cluster.
# slurmctld starts with -c (no jobs carried over from an earlier start).
set -euo pipefail

MARK="# written by dtrain scripts/slurm_local.sh"
CONF=/etc/slurm/slurm.conf
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid

# die CODE MESSAGE. Exit codes: 2 cannot run here (no root or sudo, foreign slurm.conf, usage),
# 3 slurm-wlm/munge missing and not installable, 4 a daemon did not come up.
die() { local code=$1; shift; echo "slurm_local.sh: $*" >&2; exit "$code"; }

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    die 2 "needs root or password-less sudo (to install packages, write $CONF and start daemons)"
  fi
fi

# alive PIDFILE: the process named in PIDFILE exists.
alive() {
  local pid
  pid=$($SUDO cat "$1" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && $SUDO kill -0 "$pid" 2>/dev/null
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -1; }

install_packages() {
  local missing=()
  for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "installing: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq >/dev/null 2>&1 &&
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; } ||
    die 3 "apt-get install ${missing[*]} failed"
}

write_conf() {
  local host node
  host=$(hostname -s)
  # The node line exactly as slurmd measures this machine (CPUs, cores, memory).
  node=$($SUDO slurmd -C | grep '^NodeName=') || die 4 "slurmd -C printed no NodeName line"
  if [[ -f $CONF ]] && ! grep -qF "$MARK" $CONF; then
    die 2 "$CONF exists and was not written by this script; not replacing it"
  fi
  $SUDO mkdir -p /etc/slurm
  $SUDO tee $CONF.tmp >/dev/null <<EOF
$MARK
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  $SUDO mv $CONF.tmp $CONF
}

start() {
  if alive $MUNGE_PID && alive $CTLD_PID && alive $SLURMD_PID &&
     [[ $(node_state) =~ ^(idle|mixed|allocated) ]]; then
    echo "already running"
    return 0
  fi
  install_packages
  write_conf
  $SUDO mkdir -p /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  $SUDO chown munge:munge /run/munge
  $SUDO chown slurm:slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  alive $MUNGE_PID || $SUDO runuser -u munge -- /usr/sbin/munged || die 4 "munged did not start"
  alive $CTLD_PID || $SUDO slurmctld -c || die 4 "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  alive $SLURMD_PID || $SUDO slurmd || die 4 "slurmd did not start (see /var/log/slurm/slurmd.log)"
  local i state=""
  for ((i = 0; i < 60; i++)); do
    state=$(node_state)
    [[ $state == idle ]] && { echo "started"; return 0; }
    sleep 0.5
  done
  die 4 "the node is '${state:-not listed}' after 30 s, not idle (see /var/log/slurm/)"
}

stop() {
  local f pid i
  for f in $SLURMD_PID $CTLD_PID $MUNGE_PID; do
    alive "$f" || continue
    pid=$($SUDO cat "$f")
    $SUDO kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      $SUDO kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    $SUDO kill -0 "$pid" 2>/dev/null && $SUDO kill -9 "$pid" 2>/dev/null || true
  done
  echo "stopped"
}

status() {
  local f ok=0
  for f in $MUNGE_PID $CTLD_PID $SLURMD_PID; do
    if alive "$f"; then echo "$(basename "$f" .pid): running (pid $($SUDO cat "$f"))"; else echo "$(basename "$f" .pid): stopped"; ok=1; fi
  done
  if command -v sinfo >/dev/null && ((ok == 0)); then
    sinfo -N -l 2>/dev/null || ok=1
    [[ $(node_state) =~ ^(idle|mixed|allocated) ]] || ok=1
  fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
