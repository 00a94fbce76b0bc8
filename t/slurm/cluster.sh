#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, in a temporary folder, for tests.
#
#   cluster.sh run CMD [ARG...]   starts it, runs CMD with SLURM_CONF pointing
#                                 at it, always stops it; exits with CMD's status
#   cluster.sh start              starts it and prints the lines to eval
#                                 (SLURM_CONF=..., LLLL_SLURM_DIR=...)
#   cluster.sh stop DIR           stops the daemons started in DIR, by pid, and
#                                 removes DIR
#   cluster.sh drained            (inside run) waits until squeue shows no job,
#                                 up to 30 s; fails listing the jobs left
#
# Needs root (SlurmUser=root, slurmd runs the tasks) and Debian's slurm-wlm
# (slurmctld, slurmd, sinfo). No munge: AuthType=auth/none, CredType=cred/none.
# Ports are picked at run time among those nothing listens on, so two runs do
# not collide. Nothing outside the temporary folder is written.
set -euo pipefail

UP_TIMEOUT=${LLLL_SLURM_UP_TIMEOUT:-30}   # seconds for sinfo to show the node idle
STOP_TIMEOUT=10                           # seconds for a daemon to end on SIGTERM

die() { echo "cluster.sh: $*" >&2; exit 2; }

# A TCP port in 20000..59999 that nothing listens on right now.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

write_conf() {
    local d=$1 ctld_port=$2 d_port=$3
    mkdir -p "$d/state" "$d/spool"
    cat > "$d/slurm.conf" <<CONF
ClusterName=lllltest
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
InactiveLimit=10
KillWait=2
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=64 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

# Ends pid (a daemon started here) with SIGTERM, SIGKILL after STOP_TIMEOUT.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! timeout "$STOP_TIMEOUT" tail -s 0.05 --pid="$pid" -f /dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        timeout "$STOP_TIMEOUT" tail -s 0.05 --pid="$pid" -f /dev/null || true
    fi
}

stop_dir() {
    local d=$1 ctld="" jobs t0
    [ -f "$d/slurm.conf" ] || die "$d is not a cluster folder"
    [ -f "$d/slurmctld.ours" ] && ctld=$(cat "$d/slurmctld.ours")
    # Jobs still running (a run cut short) are cancelled while the daemons
    # can still end their steps, or their srun and slurmstepd would linger.
    if [ -n "$ctld" ] && kill -0 "$ctld" 2>/dev/null; then
        jobs=$(SLURM_CONF="$d/slurm.conf" timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086 # one job id a word
            SLURM_CONF="$d/slurm.conf" timeout 10 scancel $jobs 2>/dev/null || true
            t0=$SECONDS
            while [ $((SECONDS - t0)) -lt "$STOP_TIMEOUT" ] &&
                [ -n "$(SLURM_CONF="$d/slurm.conf" timeout 10 squeue -h -o %i 2>/dev/null)" ]; do
                sleep 0.1
            done
        fi
    fi
    # slurmd first, so the controller does not wait on a node going away.
    [ -f "$d/slurmd.ours" ] && stop_pid "$(cat "$d/slurmd.ours")"
    [ -n "$ctld" ] && stop_pid "$ctld"
    rm -rf "$d"
}

# Starts both daemons in a fresh folder and waits for the node to be idle.
# Prints the folder. On failure, stops what it started and shows the logs.
start_cluster() {
    [ "$(id -u)" = 0 ] || die "needs root (slurmd runs the tasks as their user)"
    local tool
    for tool in slurmctld slurmd sinfo squeue srun; do
        command -v "$tool" >/dev/null ||
            die "$tool not found: install slurm-wlm (apt-get install --no-install-recommends slurm-wlm)"
    done
    local attempt d
    for attempt in 1 2 3; do
        d=$(mktemp -d "${TMPDIR:-/tmp}/llll-slurm.XXXXXX")
        local cp dp
        cp=$(free_port)
        dp=$(free_port)
        [ "$dp" != "$cp" ] || dp=$((cp + 1))
        write_conf "$d" "$cp" "$dp"
        # In a session of their own, so a Ctrl-C or a signal to the caller's
        # process group leaves them to stop_dir, which ends the jobs first.
        # (A background child is no group leader: setsid execs in place, and
        # $! is the daemon's pid.)
        setsid slurmctld -D -i -f "$d/slurm.conf" </dev/null >"$d/slurmctld.out" 2>&1 &
        echo $! > "$d/slurmctld.ours"
        setsid slurmd -D -N localhost -f "$d/slurm.conf" </dev/null >"$d/slurmd.out" 2>&1 &
        echo $! > "$d/slurmd.ours"
        local t0=$SECONDS state=""
        while [ $((SECONDS - t0)) -lt "$UP_TIMEOUT" ]; do
            state=$(SLURM_CONF="$d/slurm.conf" sinfo -h -o %t 2>/dev/null || true)
            [ "$state" = idle ] && break
            if ! kill -0 "$(cat "$d/slurmctld.ours")" 2>/dev/null ||
                ! kill -0 "$(cat "$d/slurmd.ours")" 2>/dev/null; then
                break   # a daemon died: its log says why
            fi
            sleep 0.1
        done
        if [ "$state" = idle ]; then
            echo "$d"
            return 0
        fi
        echo "cluster.sh: attempt $attempt: node not idle (state '${state}') after $((SECONDS - t0)) s" >&2
        for f in slurmctld.log slurmd.log slurmctld.out slurmd.out; do
            [ -s "$d/$f" ] && { echo "--- $f" >&2; tail -n 15 "$d/$f" >&2; }
        done
        stop_dir "$d"
    done
    die "could not start a one-node cluster"
}

# Polls squeue until no job is left (a finished job stays a moment in state
# CG, completing): 0, or 1 with the jobs still there after the bound.
drained() {
    [ -n "${SLURM_CONF:-}" ] || die "drained: SLURM_CONF is not set (use it inside 'run')"
    local t0=$SECONDS left
    while :; do
        left=$(squeue -h -o '%i %j %T %M' 2>&1) || die "squeue failed: $left"
        [ -z "$left" ] && { echo "cluster.sh: squeue is empty"; return 0; }
        [ $((SECONDS - t0)) -lt 30 ] || break
        sleep 0.1
    done
    echo "cluster.sh: jobs left in the queue after $((SECONDS - t0)) s:" >&2
    echo "$left" >&2
    return 1
}

case "${1:-}" in
drained)
    drained
    ;;
run)
    shift
    [ $# -gt 0 ] || die "run: no command"
    d=$(start_cluster)
    trap 'stop_dir "$d"' EXIT
    trap 'exit 130' INT TERM
    export SLURM_CONF="$d/slurm.conf" LLLL_SLURM_DIR="$d"
    rc=0
    "$@" || rc=$?
    exit "$rc"
    ;;
start)
    d=$(start_cluster)
    echo "export SLURM_CONF=$d/slurm.conf LLLL_SLURM_DIR=$d"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"
    stop_dir "$2"
    ;;
*)
    echo "usage: cluster.sh run CMD [ARG...] | start | stop DIR | drained" >&2
    exit 2
    ;;
esac
