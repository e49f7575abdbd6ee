#!/usr/bin/env bash
# The test bed: what `cargo test --workspace` talks to.
#
#   scripts/testbed.sh up [--registry]   start whatever is not already answering
#   scripts/testbed.sh status            show what answers and who started it
#   scripts/testbed.sh down              stop only what `up` started
#
# Components:
#   Kafka       tansu broker on 127.0.0.1:9092, in-memory storage   (.testbed/tansu.{pid,log})
#   MySQL       MariaDB on 127.0.0.1:3306, root without a password  (started/installed if absent)
#   PostgreSQL  on 127.0.0.1:5432                                    (started if not answering)
#   Registry    dev-schema-registry on 127.0.0.1:8081, only with --registry (tests start their own)
#
# `up` is idempotent: a component that already answers is left as it is. `down` stops only
# components whose pid file under .testbed/ says this script started them, never a database the
# machine started by itself.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TANSU_PID="$TESTBED_DIR/tansu.pid"
TANSU_LOG="$TESTBED_DIR/tansu.log"
MARIADB_PID="$TESTBED_DIR/mariadb.pid"
POSTGRES_MARKER="$TESTBED_DIR/postgres.started"
REGISTRY_PID="$TESTBED_DIR/registry.pid"
REGISTRY_LOG="$TESTBED_DIR/registry.log"
REGISTRY_DATA="$TESTBED_DIR/registry.json"

usage() {
    print_header_comment "${BASH_SOURCE[0]}"
    exit 2
}

kafka_up() {
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        if pidfile_running "$TANSU_PID" tansu; then
            info "Kafka: tansu already running (pid $(read_pidfile "$TANSU_PID"))"
        else
            info "Kafka: something already answers on $KAFKA_HOST:$KAFKA_PORT; using it"
        fi
        return
    fi
    rm -f "$TANSU_PID"
    "$REPO_ROOT/scripts/install-tansu.sh"
    start_tansu "memory://tansu/" "$TANSU_LOG" "$TANSU_PID"
}

registry_up() {
    local url="http://$REGISTRY_HOST:$REGISTRY_PORT/health"
    if http_ok "$url"; then
        info "Registry: already answering on $REGISTRY_HOST:$REGISTRY_PORT"
        return
    fi
    port_open "$REGISTRY_HOST" "$REGISTRY_PORT" \
        && die "port $REGISTRY_PORT is taken by something that is not a schema registry"
    info "Registry: building dev-schema-registry (release)"
    (cd "$REPO_ROOT" && cargo build --release --quiet -p dev-schema-registry) \
        || die "cargo build -p dev-schema-registry failed"
    local bin="$REPO_ROOT/target/release/dev-schema-registry"
    [[ -x "$bin" ]] || die "no binary at $bin after the build"
    mkdir -p "$TESTBED_DIR"
    (
        cd "$REPO_ROOT" || exit 1
        REGISTRY_ADDR="$REGISTRY_HOST:$REGISTRY_PORT" REGISTRY_DATA_FILE="$REGISTRY_DATA" \
            exec setsid "$bin" </dev/null >>"$REGISTRY_LOG" 2>&1
    ) &
    echo $! >"$REGISTRY_PID"
    if ! wait_until 30 "the registry on $url" http_ok "$url"; then
        tail -n 20 "$REGISTRY_LOG" >&2 || true
        stop_pidfile "$REGISTRY_PID" dev-schema-registry 5
        die "dev-schema-registry did not start (log: $REGISTRY_LOG)"
    fi
    info "Registry: up (pid $(read_pidfile "$REGISTRY_PID"), data $REGISTRY_DATA)"
}

cmd_up() {
    local with_registry=""
    for arg in "$@"; do
        case "$arg" in
        --registry) with_registry=1 ;;
        *) usage ;;
        esac
    done
    mkdir -p "$TESTBED_DIR"
    kafka_up
    ensure_mariadb "$MARIADB_PID"
    info "MySQL: MariaDB answers on $MYSQL_HOST:$MYSQL_PORT (root, no password)"
    ensure_postgres "$POSTGRES_MARKER"
    info "PostgreSQL: answers on $PG_HOST:$PG_PORT"
    if [[ -n "$with_registry" ]]; then
        registry_up
    fi
    info "test bed is up"
}

cmd_down() {
    stop_pidfile "$REGISTRY_PID" dev-schema-registry
    stop_pidfile "$TANSU_PID" tansu
    if [[ -f "$MARIADB_PID" ]]; then
        stop_pidfile "$MARIADB_PID" mariadbd 60
    fi
    if [[ -f "$POSTGRES_MARKER" ]]; then
        local version
        version="$(cat "$POSTGRES_MARKER")"
        info "stopping PostgreSQL $version/main (this script started it)"
        pg_ctlcluster --skip-systemctl-redirect "$version" main stop || warn "pg_ctlcluster stop failed"
        rm -f "$POSTGRES_MARKER"
    fi
    info "test bed is down (components this script did not start were left running)"
}

describe() {
    local name="$1" answering="$2" pid_file="$3" proc="$4" who
    if [[ -n "$pid_file" ]] && pidfile_running "$pid_file" "$proc"; then
        who="started by testbed.sh, pid $(read_pidfile "$pid_file")"
    else
        who="not started by testbed.sh"
    fi
    if [[ "$answering" == yes ]]; then
        printf '%-11s up    (%s)\n' "$name" "$who"
    else
        printf '%-11s down\n' "$name"
    fi
}

cmd_status() {
    local k m p r
    port_open "$KAFKA_HOST" "$KAFKA_PORT" && k=yes || k=no
    mysql_alive && m=yes || m=no
    pg_alive && p=yes || p=no
    http_ok "http://$REGISTRY_HOST:$REGISTRY_PORT/health" && r=yes || r=no
    describe "Kafka" "$k" "$TANSU_PID" tansu
    describe "MySQL" "$m" "$MARIADB_PID" mariadbd
    if [[ -f "$POSTGRES_MARKER" ]]; then
        printf '%-11s %s    (started by testbed.sh)\n' PostgreSQL "$([[ $p == yes ]] && echo up || echo down)"
    else
        describe "PostgreSQL" "$p" "" ""
    fi
    describe "Registry" "$r" "$REGISTRY_PID" dev-schema-registry
}

case "${1:-}" in
up)
    shift
    cmd_up "$@"
    ;;
down) cmd_down ;;
status) cmd_status ;;
*) usage ;;
esac
