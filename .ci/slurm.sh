#!/usr/bin/env bash
# A real single-node Slurm for the tests (Debian's slurm-wlm and munge, as root, no systemd).
#
#   .ci/slurm.sh install   apt-get install slurm-wlm munge (root only; no-op when present)
#   .ci/slurm.sh up        write a private config, start munged, slurmctld and slurmd; wait until idle
#   .ci/slurm.sh down      cancel every job, stop the daemons and whatever they started (always exits 0)
#
# The config goes where every Slurm client looks, /etc/slurm/slurm.conf (and gres.conf): the Slurm
# executor's job step drops SLURM_CONF before it calls srun, so a config elsewhere is not found
# inside a job. A slurm.conf that this script did not write is never touched (`up` refuses).
# Everything else lives under $INFBENCH_SLURM_DIR (default /tmp/infbench-slurm): munge key and
# socket, state, spool, logs and pid files; the daemons listen on their own ports. The node is
# `hostname -s` with this machine's CPUs and memory, and declares two GPUs backed by placeholder
# devices, so GPU requests are really scheduled on a GPU-less node. One such cluster per machine.
set -euo pipefail

DIR="${INFBENCH_SLURM_DIR:-/tmp/infbench-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# infbench CI cluster (written by .ci/slurm.sh)"
CLUSTER="infbench-ci"
CTLD_PORT="${INFBENCH_SLURMCTLD_PORT:-16817}"
SLURMD_PORT="${INFBENCH_SLURMD_PORT:-16818}"
NODE="$(hostname -s)"

die() { echo "slurm.sh: $*" >&2; exit 1; }

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are missing and installing them needs root"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
}

write_config() {
    if [ -e "$CONF" ] && ! head -n 1 "$CONF" | grep -qxF "$MARK"; then
        die "$CONF exists and was not written by this script: refusing to replace this machine's Slurm config"
    fi
    mkdir -p "$CONF_DIR" "$DIR"/{munge,state,spool,log,run,dev}
    local cpus mem_mb
    cpus="$(nproc)"
    mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    cat >"$CONF" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job that asks for no memory gets 1 GB per CPU, not the whole node.
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue for 10 minutes: without slurmdbd there is no sacct.
MinJobAge=600
# scancel: SIGTERM, then SIGKILL after 5 s (the default 30 s only slows the tests down).
KillWait=5
MpiDefault=none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # Slurm 22.05 drops a file-less gpu gres ("Removing file-less GPU"), so the two GPUs are
    # placeholder character devices (the null device's numbers): Slurm counts and assigns them and
    # sets CUDA_VISIBLE_DEVICES, and no job can use them as a GPU.
    local i
    for i in 0 1; do
        [ -c "$DIR/dev/gpu$i" ] || { rm -f "$DIR/dev/gpu$i"; mknod "$DIR/dev/gpu$i" c 1 3; }
    done
    { echo "$MARK"; echo "NodeName=$NODE Name=gpu File=$DIR/dev/gpu[0-1]"; } >"$CONF_DIR/gres.conf"
    # munged insists on a key only its user can read, in a directory only it can write.
    if [ ! -s "$DIR/munge/munge.key" ]; then
        head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
    fi
    chown -R munge:munge "$DIR/munge"
    chmod 0700 "$DIR/munge"
    chmod 0400 "$DIR/munge/munge.key"
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    install
    [ "$(id -u)" = 0 ] || die "starting slurmctld, slurmd and munged needs root"
    write_config
    export SLURM_CONF="$CONF" INFBENCH_SLURM_DAEMON="$DIR"
    if ! running "$DIR/munge/munged.pid"; then
        runuser -u munge -- /usr/sbin/munged --force \
            --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
            --seed-file="$DIR/munge/munged.seed"
    fi
    # -c: a fresh cluster, no jobs recovered from an earlier run's state.
    running "$DIR/run/slurmctld.pid" || /usr/sbin/slurmctld -c -f "$CONF"
    running "$DIR/run/slurmd.pid" || /usr/sbin/slurmd -f "$CONF"
    for _ in $(seq 60); do
        if sinfo -h -N -o "%t" 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "slurm.sh: cluster infbench-ci up ($CONF, state in $DIR)"
            return 0
        fi
        sleep 1
    done
    sinfo -N -l >&2 || true
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    die "the node did not become idle in 60 s (logs in $DIR/log)"
}

# Processes of this cluster: the job steps (slurmstepd inherits INFBENCH_SLURM_DAEMON from slurmd),
# the jobs and whatever they started, a bench server included (SLURM_CLUSTER_NAME=infbench-ci).
cluster_pids() {
    local pid
    for pid in /proc/[0-9]*; do
        pid="${pid#/proc/}"
        [ "$pid" = "$$" ] && continue
        if { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxE "INFBENCH_SLURM_DAEMON=$DIR|SLURM_CLUSTER_NAME=$CLUSTER"; then
            echo "$pid"
        fi
    done
}

stop_pidfile() {
    local file="$1" pid
    [ -s "$file" ] || return 0
    pid="$(cat "$file")"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    set +e
    export SLURM_CONF="$CONF"
    if [ -f "$CONF" ] && running "$DIR/run/slurmctld.pid"; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel --full --quiet 2>/dev/null
        for _ in $(seq 20); do
            [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pidfile "$DIR/run/slurmd.pid"
    stop_pidfile "$DIR/run/slurmctld.pid"
    stop_pidfile "$DIR/munge/munged.pid"
    local pids
    pids="$(cluster_pids)"
    if [ -n "$pids" ]; then
        kill $pids 2>/dev/null; sleep 1; kill -9 $(cluster_pids) 2>/dev/null
    fi
    for file in "$CONF" "$CONF_DIR/gres.conf"; do
        if [ -f "$file" ] && head -n 1 "$file" | grep -qxF "$MARK"; then rm -f "$file"; fi
    done
    echo "slurm.sh: cluster infbench-ci down"
    return 0
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    *) die "usage: $0 install|up|down" ;;
esac
