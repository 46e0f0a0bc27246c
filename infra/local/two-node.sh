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
# Settings (environment): STATE_DIR (default /tmp/pipeline-two-node: Ray's socket paths must
# stay short), PRIVATE (colon-separated folders the worker gets its own empty copy of; default
# the node-local cache, ${PIPELINE_CACHE:-~/.cache/pipeline}), NUM_CPUS (per node, 1),
# RAY_PORT (6390), DASHBOARD_PORT (8266), CLIENT_PORT (10011), HEAD_AGENT_PORT (52371),
# WORKER_AGENT_PORT (52372), WORKER_PORTS (21000: the head's worker processes take 1000 ports
# from there, the worker node's the next 1000).
set -euo pipefail

STATE_DIR=$(realpath -m "${STATE_DIR:-/tmp/pipeline-two-node}")
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

# Wait until a node that is not in $2 (the nodes seen before it started) is active.
wait_for_new_node() {
    local pid_file=$1 before=$2 node
    for _ in $(seq 1 240); do
        for node in $(active_nodes); do
            grep -qx "$node" <<<"$before" || return 0
        done
        kill -0 "$(cat "$pid_file")" 2>/dev/null || break
        sleep 0.5
    done
    die "a node did not join the cluster at $ADDRESS: see $STATE_DIR/*.log"
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
    wait_for_new_node "$STATE_DIR/head.pid" ""
}

start_worker() {
    local low=$((WORKER_PORTS + 1000)) mounts="" folder before
    before=$(active_nodes)
    IFS=: read -r -a folders <<<"$PRIVATE"
    for folder in "${folders[@]}"; do
        [ -n "$folder" ] || continue
        mkdir -p "$folder"
        mounts+="mount -t tmpfs tmpfs '$folder' && "
    done
    setsid "${NAMESPACE[@]}" sh -c "${mounts}exec ray start --block --address=$ADDRESS \
        --num-cpus=$NUM_CPUS --temp-dir=$STATE_DIR/worker \
        --dashboard-agent-listen-port=$WORKER_AGENT_PORT \
        --min-worker-port=$low --max-worker-port=$((low + 999))" \
        >>"$STATE_DIR/worker.log" 2>&1 &
    echo $! >"$STATE_DIR/worker.pid"
    wait_for_new_node "$STATE_DIR/worker.pid" "$before"
}

stop_node() {
    local name=$1 pid
    [ -f "$STATE_DIR/$name.pid" ] || return 0
    pid=$(cat "$STATE_DIR/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true  # `ray start --block` stops its node
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/$name.pid"
    say "stopped the $name node"
}

stop_all() {
    stop_node worker
    stop_node head
    # Whatever of the two nodes outlived them (their command lines name STATE_DIR).
    pkill -KILL -f "$STATE_DIR/(head|worker)" 2>/dev/null || true
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
    mkdir -p "$STATE_DIR"
    [ -f "$STATE_DIR/head.pid" ] && kill -0 "$(cat "$STATE_DIR/head.pid")" 2>/dev/null \
        && die "a cluster is already running from $STATE_DIR (two-node.sh stop)"
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
    up) shift || true; up "$@" ;;
    stop) stop_all ;;
    kill-worker)
        [ -f "$STATE_DIR/worker.pid" ] || die "no worker node running from $STATE_DIR"
        kill -KILL -- "-$(cat "$STATE_DIR/worker.pid")"
        rm -f "$STATE_DIR/worker.pid"
        say "worker node killed"
        ;;
    start-worker) start_worker; say "worker node up" ;;
    env) if [ -f "$STATE_DIR/env.sh" ]; then cat "$STATE_DIR/env.sh"; else die "no cluster in $STATE_DIR"; fi ;;
    -h|--help|help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command $1 (up, stop, kill-worker, start-worker, env)" ;;
esac
