#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for tests and CI (Debian slurm-wlm + munge).
#
#   bash ci/slurm.sh install   # apt-get the packages if missing (root)
#   bash ci/slurm.sh start     # install if needed, write the config, start munged, slurmctld, slurmd
#   bash ci/slurm.sh status    # sinfo of the running cluster
#   bash ci/slurm.sh stop      # cancel jobs, stop the daemons this script started (by pid file)
#
# State (config, spool, logs, pid files, munge socket) lives in $CONTA_SLURM_DIR
# (default /tmp/conta-slurm). The config must also be reachable at
# /etc/slurm/slurm.conf (the executor's job step drops SLURM_CONF before its
# inner srun), so start links it there; stop removes the link when it is ours.
# The node offers one stand-in GPU (gres gpu:1 backed by /dev/null) so GPU rules
# are accepted; jobs see CUDA_VISIBLE_DEVICES=0 but no real device.
# Accounting is off: use `slurm-status-command: squeue` (profiles/slurm does).
set -euo pipefail

DIR=${CONTA_SLURM_DIR:-/tmp/conta-slurm}
CTLD_PORT=${CONTA_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${CONTA_SLURM_SLURMD_PORT:-6818}
ETC_CONF=/etc/slurm/slurm.conf
SOCKET=$DIR/munge/munge.socket

log() { echo "[slurm.sh] $*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        log "must run as root (starts munged, slurmctld and slurmd)"
        exit 3
    fi
}

have_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null
}

install() {
    if have_packages; then
        return 0
    fi
    need_root
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >"$DIR.apt.log" 2>&1; then
        apt-get update >>"$DIR.apt.log" 2>&1
        apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >>"$DIR.apt.log" 2>&1 \
            || { tail -20 "$DIR.apt.log" >&2; exit 4; }
    fi
}

alive() {  # alive <pidfile>: the process named in the pid file is running
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
    local cpus mem
    # nproc honours OMP_NUM_THREADS (a test process may have set it to 1): ask for the online CPUs.
    cpus=$(getconf _NPROCESSORS_ONLN)
    # slurmd drains a node that reports less memory than configured: stay below the real amount.
    mem=$(awk '/MemTotal/ {m = int($2 / 1024) - 512; print (m > 8000 ? 8000 : m)}' /proc/meminfo)
    mkdir -p "$DIR"/{state,spool,log,munge}
    cat >"$DIR/slurm.conf" <<EOF
# Written by ci/slurm.sh: a one-node test cluster on localhost.
ClusterName=conta-ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MinJobAge=600
ReturnToService=2
MpiDefault=none
GresTypes=gpu
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    echo "Name=gpu Count=1 File=/dev/null" >"$DIR/gres.conf"
    mkdir -p /etc/slurm
    if [[ -e $ETC_CONF || -L $ETC_CONF ]] && [[ $(readlink "$ETC_CONF" || true) != "$DIR/slurm.conf" ]]; then
        log "$ETC_CONF exists and is not this script's link; refusing to replace it"
        exit 5
    fi
    ln -sfn "$DIR/slurm.conf" "$ETC_CONF"
    # gres.conf is read from the folder of the slurm.conf that slurmd was given.
}

start_munge() {
    if alive "$DIR/munged.pid"; then
        return 0
    fi
    local key=$DIR/munge/munge.key
    if [[ ! -s $key ]]; then
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
    chown -R munge:munge "$DIR/munge" 2>/dev/null || true
    chmod 700 "$DIR/munge"
    chmod 400 "$key"
    local as_munge=()
    if id munge >/dev/null 2>&1; then
        as_munge=(runuser -u munge --)
    fi
    "${as_munge[@]}" munged --key-file="$key" --socket="$SOCKET" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" --force
    for _ in $(seq 50); do
        [[ -S $SOCKET && -s $DIR/munge/munged.pid ]] && break
        sleep 0.1
    done
    cp "$DIR/munge/munged.pid" "$DIR/munged.pid"
    chmod 755 "$DIR/munge"  # clients (any user) reach the socket
    chmod 777 "$SOCKET" 2>/dev/null || true
}

start() {
    need_root
    mkdir -p "$DIR"
    install
    write_config
    start_munge
    export SLURM_CONF=$DIR/slurm.conf
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld -f "$SLURM_CONF"
    fi
    if ! alive "$DIR/slurmd.pid"; then
        slurmd -f "$SLURM_CONF" -N localhost
    fi
    for _ in $(seq 150); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            log "cluster up: $(sinfo -h -N -o '%N %T %c CPUs %G' 2>/dev/null)"
            return 0
        fi
        sleep 0.2
    done
    log "node did not become idle within 30 s:"
    sinfo -N -l >&2 || true
    tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 6
}

stop() {
    if command -v scancel >/dev/null && [[ -e $DIR/slurm.conf ]]; then
        SLURM_CONF=$DIR/slurm.conf scancel --user="$(id -un)" 2>/dev/null || true
    fi
    local name pidfile pid
    for name in slurmd slurmctld munged; do
        pidfile=$DIR/$name.pid
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    if [[ $(readlink "$ETC_CONF" 2>/dev/null || true) == "$DIR/slurm.conf" ]]; then
        rm -f "$ETC_CONF"
    fi
    # Job and node state would otherwise be recovered by the next start.
    rm -rf "$DIR/state" "$DIR/spool"
    log "stopped"
}

status() {
    SLURM_CONF=$DIR/slurm.conf sinfo -N -l
}

case ${1:-} in
    install) mkdir -p "$(dirname "$DIR")"; install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
