#!/usr/bin/env bash
# A throwaway one-node Slurm cluster on loopback, for testing profiles/slurm.
#
#   tests/slurm/cluster.sh start   install Debian's slurm + munge if missing, write a one-node
#                                  slurm.conf + gres.conf under $MAPBENCH_SLURM_DIR, start munged,
#                                  slurmctld and slurmd by hand (no systemd), wait until idle
#   tests/slurm/cluster.sh stop    cancel leftover jobs, stop every daemon it started, by PID
#   tests/slurm/cluster.sh status  sinfo + squeue
#
# Clients find the cluster through SLURM_CONF=$MAPBENCH_SLURM_DIR/etc/slurm.conf and through
# /etc/slurm/slurm.conf, a symlink to it made for the cluster's lifetime: the plugin's in-job
# `srun` runs with every SLURM_* variable but a few removed (SLURM_CONF included), so it only
# finds the default path (else it falls back to a DNS SRV lookup). `start` refuses to run
# where /etc/slurm/slurm.conf is a real file (a machine that has its own Slurm).
# Everything binds to and talks to 127.0.0.1 only. Needs root (apt, the munge user).
# `start` first stops a cluster a previous (killed) run left behind, so it is idempotent.
set -euo pipefail

DIR=${MAPBENCH_SLURM_DIR:-${TMPDIR:-/tmp}/mapbench-slurm}
GPUS=${MAPBENCH_SLURM_GPUS:-2}   # fake GPUs on the node (gres File= symlinks to /dev/null)
PIDS=$DIR/pids                   # "name pid" per daemon we started
ETC_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$DIR/etc/slurm.conf

log() { echo "cluster.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -q >/dev/null
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

write_config() {
    local cpus mem_mb i gres_files=""
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$DIR"/{etc,state,spool,log,dev,munge}
    chmod 755 "$DIR"

    for ((i = 0; i < GPUS; i++)); do
        ln -sfn /dev/null "$DIR/dev/gpu$i"
    done
    cat >"$DIR/etc/gres.conf" <<EOF
# Fake GPUs: the devices are /dev/null, so gpu requests schedule on a CPU-only machine.
NodeName=localhost Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]
EOF

    cat >"$DIR/etc/slurm.conf" <<EOF
# One-node test cluster written by tests/slurm/cluster.sh. Loopback only.
ClusterName=mapbench-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${MAPBENCH_SLURM_PORT:-6817}
SlurmdPort=$(( ${MAPBENCH_SLURM_PORT:-6817} + 1 ))
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=1000
# The plugin polls with squeue (no slurmdbd, so no sacct): finished jobs must stay visible
# for >= 3 x slurm-init-seconds-before-status-checks.
MinJobAge=300
ReturnToService=2
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    chown munge:munge "$DIR/munge"
    chmod 755 "$DIR/munge"   # munged wants its socket dir searchable by all
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$DIR/munge/munge.key"
    chmod 600 "$DIR/munge/munge.key"
    runuser -u munge -- munged \
        --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" --origin=127.0.0.1 </dev/null
    record munged "$DIR/munge/munged.pid"
}

# record NAME PIDFILE: wait for the daemon's pid file, append "NAME PID" to $PIDS.
record() {
    local name=$1 pidfile=$2 i
    for ((i = 0; i < 100; i++)); do
        if [ -s "$pidfile" ]; then
            echo "$name $(cat "$pidfile")" >>"$PIDS"
            return
        fi
        sleep 0.1
    done
    die "$name did not start; see $DIR/log and $DIR/munge"
}

wait_idle() {
    local i state
    for ((i = 0; i < 300; i++)); do
        state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
        case $state in
            idle) return ;;
            drain* | down* | inval*)
                scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    sinfo -N -l >&2 || true
    die "node never became idle (state '$state'); see $DIR/log"
}

link_default_conf() {
    if [ -e "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" != "$SLURM_CONF" ]; then
        die "$ETC_CONF exists and is not ours; run this test on a machine without its own Slurm"
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$SLURM_CONF" "$ETC_CONF"
}

unlink_default_conf() {
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$SLURM_CONF" ]; then
        rm -f "$ETC_CONF"
    fi
}

start() {
    [ "$(id -u)" -eq 0 ] || die "needs root (installs packages, runs munged as user munge)"
    stop_daemons quiet
    unlink_default_conf
    install_packages
    # Fresh state each time: no jobs or node state carried over from an earlier run.
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/log"
    write_config
    link_default_conf
    : >"$PIDS"
    start_munge
    slurmctld -f "$SLURM_CONF" -i </dev/null
    record slurmctld "$DIR/slurmctld.pid"
    slurmd -f "$SLURM_CONF" -N localhost </dev/null
    record slurmd "$DIR/slurmd.pid"
    wait_idle
    log "up: SLURM_CONF=$SLURM_CONF ($(sinfo -h -o '%D node, %c cpus, %G'))"
}

alive() { # alive NAME PID: is PID still that daemon (not a reused pid)?
    [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ]
}

stop_daemons() {
    local quiet=${1:-} name pid i
    [ -s "$PIDS" ] || return 0
    # Jobs first, so their slurmstepd processes end before slurmd goes.
    if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null; then
        local jobs
        jobs=$(timeout 5 squeue -h -o %i 2>/dev/null || true)
        [ -n "$jobs" ] && { timeout 10 scancel $jobs >/dev/null 2>&1 || true; }
        for ((i = 0; i < 50; i++)); do
            [ -z "$(timeout 5 squeue -h -t R,CG -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    # Reverse start order: slurmd, slurmctld, munged.
    tac "$PIDS" | while read -r name pid; do
        alive "$name" "$pid" || continue
        [ -n "$quiet" ] && log "stopping $name ($pid) left by an earlier run"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$name" "$pid" || break
            sleep 0.1
        done
        if alive "$name" "$pid"; then
            log "$name ($pid) ignored SIGTERM; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$PIDS"
}

stop() {
    stop_daemons
    unlink_default_conf
    log "stopped"
}

status() {
    sinfo
    squeue
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (cluster dir: $DIR)" >&2; exit 2 ;;
esac
