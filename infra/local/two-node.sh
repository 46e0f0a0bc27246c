#!/usr/bin/env bash
# A two-node Ray cluster on this machine: a head and a worker node, the worker with its own
# view of the disk (a tmpfs over each PRIVATE folder, in its own mount namespace), so a local
# path of the head is really not on the worker: the cluster path (locations every node sees,
# staging per node, a node lost mid-run) can be tried on a laptop. The tests use it too.
#
#   infra/local/two-node.sh up [--detach] [--head-only]
#                                           start both nodes (or the head alone); prints the
#                                           variables to export
#   infra/local/two-node.sh stop            stop what `up --detach` started
#   infra/local/two-node.sh kill-worker     lose the worker node at once (SIGKILL, a crash)
#   infra/local/two-node.sh start-worker    start it again (a fresh disk view, as a new machine)
#   infra/local/two-node.sh env             print the variables again
#
# `up` stays in the foreground and stops both nodes on Ctrl-C; `--detach` returns once both
# are up. Token auth is on (RAY_AUTH_MODE=token): the token is RAY_AUTH_TOKEN, or the file at
# RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token); where there is none yet, `up` writes a new
# one there, readable by you alone (as `ray get-auth-token --generate` would, but mode 600).
#
# Settings (environment): STATE_DIR (pid files, logs, Ray's temp folders; default
# $XDG_RUNTIME_DIR/pipeline-two-node, else /tmp/pipeline-two-node-$UID: Ray's socket paths
# must stay short; a folder of yours that nobody else can write, or the script refuses it),
# PRIVATE (colon-separated folders the worker gets its own empty copy of; default the
# node-local cache, ${PIPELINE_CACHE:-~/.cache/pipeline}), NUM_CPUS (per node, 1), RAY_PORT
# (6390), DASHBOARD_PORT (8266), CLIENT_PORT (10011), HEAD_AGENT_PORT (52371),
# WORKER_AGENT_PORT (52372), WORKER_PORTS (21000: the head's worker processes take 1000 ports
# from there, the worker node's the next 1000).
set -euo pipefail

if [ -n "${XDG_RUNTIME_DIR:-}" ]; then DEFAULT_STATE=$XDG_RUNTIME_DIR/pipeline-two-node
else DEFAULT_STATE=/tmp/pipeline-two-node-$(id -u); fi
STATE_DIR=${STATE_DIR:-$DEFAULT_STATE}
PRIVATE=${PRIVATE:-${PIPELINE_CACHE:-$HOME/.cache/pipeline}}
NUM_CPUS=${NUM_CPUS:-1}
RAY_PORT=${RAY_PORT:-6390}
DASHBOARD_PORT=${DASHBOARD_PORT:-8266}
CLIENT_PORT=${CLIENT_PORT:-10011}
HEAD_AGENT_PORT=${HEAD_AGENT_PORT:-52371}
WORKER_AGENT_PORT=${WORKER_AGENT_PORT:-52372}
WORKER_PORTS=${WORKER_PORTS:-21000}
ADDRESS="127.0.0.1:$RAY_PORT"
export RAY_AUTH_MODE=token
unset RAY_ADDRESS  # `ray start` would join that cluster instead

TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}

say() { echo "two-node: $*" >&2; }
die() { say "error: $*"; exit 1; }

# `ray start` with token auth refuses to start without a token (a fresh machine has none).
ensure_token() {
    [ -n "${RAY_AUTH_TOKEN:-}" ] && return 0
    [ -s "$TOKEN_PATH" ] && return 0
    (
        umask 077
        mkdir -p "$(dirname "$TOKEN_PATH")"
        python3 -c 'import secrets; print(secrets.token_hex(32), end="")' >"$TOKEN_PATH.new"
        mv "$TOKEN_PATH.new" "$TOKEN_PATH"
    ) || die "cannot write a Ray auth token to $TOKEN_PATH"
    say "no Ray auth token yet: wrote a new one to $TOKEN_PATH (mode 600)"
}

# The state folder holds the pid files this script kills by: made private (mode 700), and
# refused when it is a link, someone else's, or writable by others (a fixed name under /tmp can
# be made beforehand by anyone).
private_state_dir() {
    [ -L "$STATE_DIR" ] && die "STATE_DIR $STATE_DIR is a symbolic link: remove it or set STATE_DIR"
    [ -e "$STATE_DIR" ] || (umask 077 && mkdir -p "$STATE_DIR") || true
    STATE_DIR=$(realpath "$STATE_DIR") || die "cannot make STATE_DIR $STATE_DIR"
    [ -d "$STATE_DIR" ] && [ "$(stat -c %u "$STATE_DIR")" = "$(id -u)" ] \
        && [ -z "$(find "$STATE_DIR" -maxdepth 0 -perm /022)" ] \
        || die "STATE_DIR $STATE_DIR is not a folder of yours that only you can write: remove it or set STATE_DIR"
}

command -v ray >/dev/null || die "ray not found: pip install 'ray[default]'"
command -v unshare >/dev/null || die "unshare not found (util-linux)"

# The worker's own disk view: root can mount in a new mount namespace; others in a user
# namespace of their own (where the kernel allows it).
if [ "$(id -u)" = 0 ]; then NAMESPACE=(unshare --mount --propagation private)
else NAMESPACE=(unshare --user --map-root-user --mount --propagation private); fi

active_nodes() {
    ray status --address="$ADDRESS" 2>/dev/null | sed -n '/^Active:/,/^Pending:/p' \
        | grep -o 'node_[0-9a-f]*' || true
}

# Wait until a node that is not in $2 (the nodes seen before it started) is active; $1 is the
# process that started it.
wait_for_new_node() {
    local pid=$1 before=$2 node
    for _ in $(seq 1 240); do
        for node in $(active_nodes); do
            grep -qx "$node" <<<"$before" || return 0
        done
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    die "a node did not join the cluster at $ADDRESS: see $STATE_DIR/*.log"
}

# The command line of process $1, one argument a line ('' where there is no such process).
command_line() {
    [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null || true
}

# The pid in $STATE_DIR/$1.pid, printed only where it is still that node: a process of ours,
# leading its own process group (setsid), started with this node's --temp-dir. A pid file
# outlives its process, and the pid may since be another program's.
node_pid() {
    local name=$1 pid stat pgrp
    pid=$(cat "$STATE_DIR/$name.pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[1-9][0-9]*$ ]] || return 0
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
    stat=${stat##*) }  # the fields after the command's name: state ppid pgrp ...
    read -r _ _ pgrp _ <<<"$stat"
    [ "$pgrp" = "$pid" ] && [ "$(stat -c %u "/proc/$pid")" = "$(id -u)" ] || return 0
    command_line "$pid" | grep -qxF -- "--temp-dir=$STATE_DIR/$name" || return 0
    echo "$pid"
}

start_head() {
    local low=$WORKER_PORTS
    setsid ray start --head --block --port="$RAY_PORT" --num-cpus="$NUM_CPUS" \
        --temp-dir="$STATE_DIR/head" --dashboard-host=127.0.0.1 \
        --dashboard-port="$DASHBOARD_PORT" --ray-client-server-port="$CLIENT_PORT" \
        --dashboard-agent-listen-port="$HEAD_AGENT_PORT" \
        --min-worker-port="$low" --max-worker-port="$((low + 999))" \
        >>"$STATE_DIR/head.log" 2>&1 &
    echo $! >"$STATE_DIR/head.pid"
    wait_for_new_node $! ""
}

# In the worker's mount namespace: a tmpfs over each folder named before `--`, then the command
# after it. A fixed script: the folders are its arguments, never part of its text.
# shellcheck disable=SC2016
MOUNT_THEN_EXEC='while [ "$1" != -- ]; do mount -t tmpfs tmpfs "$1" || exit 1; shift; done
shift; exec "$@"'

start_worker() {
    local low=$((WORKER_PORTS + 1000)) folder before folders=() private=()
    before=$(active_nodes)
    IFS=: read -r -a folders <<<"$PRIVATE"
    for folder in "${folders[@]}"; do
        [ -n "$folder" ] || continue
        mkdir -p "$folder"
        private+=("$folder")
    done
    setsid "${NAMESPACE[@]}" sh -c "$MOUNT_THEN_EXEC" mount-private "${private[@]}" -- \
        ray start --block --address="$ADDRESS" --num-cpus="$NUM_CPUS" \
        --temp-dir="$STATE_DIR/worker" --dashboard-agent-listen-port="$WORKER_AGENT_PORT" \
        --min-worker-port="$low" --max-worker-port="$((low + 999))" \
        >>"$STATE_DIR/worker.log" 2>&1 &
    echo $! >"$STATE_DIR/worker.pid"
    wait_for_new_node $! "$before"
}

stop_node() {
    local name=$1 pid
    [ -f "$STATE_DIR/$name.pid" ] || return 0
    pid=$(node_pid "$name")
    if [ -n "$pid" ]; then
        kill -TERM -- "-$pid" 2>/dev/null || true  # `ray start --block` stops its node
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        say "stopped the $name node"
    else
        say "the $name node was not running (its pid file was stale)"
    fi
    rm -f "$STATE_DIR/$name.pid"
}

# Whatever of the two nodes outlived them: processes of ours with an argument naming one of
# their folders, compared as plain text (not a pattern), killed one by one by pid.
kill_leftovers() {
    local proc pid
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" != $$ ] && [ "$(stat -c %u "$proc" 2>/dev/null)" = "$(id -u)" ] || continue
        command_line "$pid" | grep -qF -e "$STATE_DIR/head" -e "$STATE_DIR/worker" || continue
        kill -KILL "$pid" 2>/dev/null || true
    done
}

stop_all() {
    stop_node worker
    stop_node head
    kill_leftovers
    rm -rf "$STATE_DIR/head" "$STATE_DIR/worker"
}

write_env() {
    {
        echo "export RAY_ADDRESS=$ADDRESS RAY_AUTH_MODE=token"
        if [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
            echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
        fi
        echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT  # ray job submit"
    } >"$STATE_DIR/env.sh"
}

on_failure() {
    local code=$?
    [ "$code" -ne 0 ] && stop_all
    exit "$code"
}

up() {
    local detach=0 nodes=2
    for arg in "$@"; do
        case $arg in
            --detach) detach=1 ;;
            --head-only) nodes=1 ;;
            *) die "unknown option $arg (up [--detach] [--head-only])" ;;
        esac
    done
    [ -n "$(node_pid head)" ] && die "a cluster is already running from $STATE_DIR (two-node.sh stop)"
    if [ "$detach" = 0 ]; then trap 'stop_all; exit 130' INT TERM; fi
    trap on_failure EXIT
    ensure_token
    start_head
    [ "$nodes" = 2 ] && start_worker
    write_env
    trap - EXIT
    say "$nodes node(s) up at $ADDRESS (the worker's own: $PRIVATE); export:"
    cat "$STATE_DIR/env.sh"
    if [ "$detach" = 1 ]; then
        say "running; stop with: $0 stop"
        return 0
    fi
    say "running; Ctrl-C stops it"
    while true; do sleep 1; done
}

case ${1:-up} in
    -h|--help|help) ;;
    *) private_state_dir ;;
esac
case ${1:-up} in
    up) shift || true; up "$@" ;;
    stop) stop_all ;;
    kill-worker)
        pid=$(node_pid worker)
        [ -n "$pid" ] || die "no worker node running from $STATE_DIR"
        kill -KILL -- "-$pid"
        rm -f "$STATE_DIR/worker.pid"
        say "worker node killed"
        ;;
    start-worker) start_worker; say "worker node up" ;;
    env) if [ -f "$STATE_DIR/env.sh" ]; then cat "$STATE_DIR/env.sh"; else die "no cluster in $STATE_DIR"; fi ;;
    -h|--help|help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command $1 (up, stop, kill-worker, start-worker, env)" ;;
esac
