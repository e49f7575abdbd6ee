#!/usr/bin/env bash
# Runs the whole pipeline on this machine, without Docker: the same topology as docker-compose.yml.
#
#   scripts/run-native.sh [--duration SECONDS] [--consumers N] [--debug] [--follow]
#
#   Kafka            tansu on 127.0.0.1:9092 (data kept in .testbed/tansu.db), unless a broker
#                    already answers there
#   MySQL            the local MariaDB on 127.0.0.1:3306 (started, or installed, if needed)
#   schema registry  dev-schema-registry on 127.0.0.1:8081 (for development only)
#   product-updater  http://127.0.0.1:9101   seeds data/products.csv, then keeps changing prices
#   topic            created first with the tansu CLI (else by the producer), so that the
#                    consumers can start at once and join the group while the rest starts
#   producer         http://127.0.0.1:9102   streams changes to Kafka
#   consumer x N     http://127.0.0.1:911N   (consumer_N serves on 9110+N; default N = 5)
#
# Output of the consumers: consumer_logs/consumer_N/consumer_log.json. Process logs:
# .testbed/logs/*.log. Scale while it runs: scripts/scale-consumers.sh 7.
#
# Options:
#   --duration SECONDS  stop by itself after SECONDS (used by scripts/e2e-native.sh)
#   --consumers N       start N consumers instead of 5
#   --debug             use a debug build (shares the build of `cargo test`) instead of release
#   --follow            also print every process log to the terminal
#
# Ctrl-C (SIGINT) or SIGTERM stops everything this script started (consumers first, then the
# producer, the updater, the registry, and the broker and database if it started them) and
# nothing else. Settings: the services' environment variables (DATABASE_URL, TOPIC, LOG_FORMAT,
# RUST_LOG, UPDATES_PER_SECOND, ...) are passed through; TANSU_STORAGE picks the broker storage.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

DURATION=""
CONSUMERS=5
PROFILE=release
FOLLOW=""
while (($#)); do
    case "$1" in
    --duration)
        DURATION="${2:-}"
        [[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "--duration expects a whole number of seconds, got '${2:-}'"
        shift 2
        ;;
    --consumers)
        CONSUMERS="${2:-}"
        if ! [[ "$CONSUMERS" =~ ^[0-9]+$ ]] || ((CONSUMERS > CONSUMER_MAX_SLOTS)); then
            die "--consumers expects a number from 0 to $CONSUMER_MAX_SLOTS, got '${2:-}'"
        fi
        shift 2
        ;;
    --debug)
        PROFILE=debug
        shift
        ;;
    --follow)
        FOLLOW=1
        shift
        ;;
    -h | --help)
        print_header_comment "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown option '$1' (try --help)" ;;
    esac
done

UPDATER_ADDR="127.0.0.1:9101"
PRODUCER_ADDR="127.0.0.1:9102"

# --- settings shared by every service (the interface contract's defaults) ---------------------
export DATABASE_URL="${DATABASE_URL:-mysql://root@$MYSQL_HOST:$MYSQL_PORT/buy_online_db}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$KAFKA_HOST:$KAFKA_PORT}"
export SCHEMA_REGISTRY_URL="${SCHEMA_REGISTRY_URL:-http://$REGISTRY_HOST:$REGISTRY_PORT}"
export TOPIC="${TOPIC:-product_updates}"
export TOPIC_PARTITIONS="${TOPIC_PARTITIONS:-10}"
export WATERMARK_PATH="${WATERMARK_PATH:-time_track/last_read_timestamp.json}"
export CONSUMER_LOGS_DIR="${CONSUMER_LOGS_DIR:-consumer_logs}"
export CONSUMER_GROUP="${CONSUMER_GROUP:-product_updates_consumers}"
# The native run's broker is tansu 0.6, which returns nothing of a record batch when a fetch starts
# in its middle: consumers fetch (and skip) one producer batch before a resume point, so they
# seldom need to look further back (they do, until the fetch covers the resume point).
export CONSUMER_RESUME_REWIND_RECORDS="${CONSUMER_RESUME_REWIND_RECORDS:-1000}"
export PRODUCTS_CSV="${PRODUCTS_CSV:-data/products.csv}"
export LOG_FORMAT="${LOG_FORMAT:-text}"
export RUST_LOG="${RUST_LOG:-info}"
# Each service gets its own port; consumers pick theirs from the slot they claim.
unset HTTP_ADDR CONSUMER_SLOT

RUN_PID_FILE="$NATIVE_DIR/run.pid"
BIN_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$PROFILE"

# --- one run at a time; leftovers of a run that was killed are stopped --------------------------
mkdir -p "$NATIVE_DIR" "$NATIVE_LOG_DIR"
if native_run_active; then
    die "run-native.sh is already running (pid $(read_pidfile "$RUN_PID_FILE")); stop it first"
fi

stop_everything() {
    local slots
    mapfile -t slots < <(running_consumer_slots)
    ((${#slots[@]} == 0)) || stop_consumers "${slots[@]}"
    rm -f "$NATIVE_DIR"/consumer_*.pid
    local starting
    for starting in "$NATIVE_DIR"/consumer.starting.*.pid; do
        if [[ -e "$starting" ]]; then
            stop_pidfile "$starting" consumer 30
        fi
    done
    stop_pidfile "$NATIVE_DIR/producer.pid" producer 30
    stop_pidfile "$NATIVE_DIR/product-updater.pid" product-updater 30
    stop_pidfile "$NATIVE_DIR/registry.pid" dev-schema-registry 10
    stop_pidfile "$NATIVE_DIR/tansu.pid" tansu 20
    if [[ -f "$NATIVE_DIR/mariadb.pid" ]]; then
        stop_pidfile "$NATIVE_DIR/mariadb.pid" mariadbd 60
    fi
    if [[ -f "$NATIVE_DIR/follow.pid" ]]; then
        stop_pidfile "$NATIVE_DIR/follow.pid" tail 5
    fi
}

if compgen -G "$NATIVE_DIR/*.pid" >/dev/null; then
    warn "a previous run did not stop cleanly; stopping what it left behind"
    stop_everything
fi
echo $$ >"$RUN_PID_FILE"

cleanup() {
    local rc=$?
    trap '' INT TERM
    info "stopping the pipeline (consumers, producer, updater, registry, and what else this run started)"
    stop_everything
    rm -f "$RUN_PID_FILE" "$NATIVE_DIR/env.sh"
    info "stopped"
    exit "$rc"
}
trap cleanup EXIT
trap 'info "interrupted"; exit 130' INT
trap 'info "terminated"; exit 143' TERM

# --- broker -------------------------------------------------------------------------------------
if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    info "Kafka: a broker already answers on $KAFKA_HOST:$KAFKA_PORT; using it (it is not stopped at the end)"
else
    "$REPO_ROOT/scripts/install-tansu.sh"
    storage="${TANSU_STORAGE:-sqlite://.testbed/tansu.db}"
    start_tansu "$storage" "$NATIVE_LOG_DIR/tansu.log" "$NATIVE_DIR/tansu.pid"
fi

# --- build --------------------------------------------------------------------------------------
for addr in "$UPDATER_ADDR" "$PRODUCER_ADDR"; do
    port_open "${addr%:*}" "${addr##*:}" && die "port ${addr##*:} is already in use; is another pipeline running?"
done
info "building the services ($PROFILE)"
build_flags=()
[[ "$PROFILE" == release ]] && build_flags=(--release)
cargo build "${build_flags[@]}" -p product-updater -p producer -p consumer -p dev-schema-registry \
    || die "cargo build failed"

# --- topic and consumers -----------------------------------------------------------------------
# The topic is created first, as compose's kafka-init does, and the consumers start at once: they
# join the group while the other services start. Joining is most of a first run's time (tansu 0.6
# holds each JoinGroup and SyncGroup of a static member for 3 s), and a topic that appeared only
# after they joined would cost one more rebalance. Without the tansu CLI (or on a secured broker)
# the producer creates the topic and the consumers start once it exists.
topic_exists() {
    local tansu
    tansu="$(find_tansu)" || return 0 # without the tansu CLI, rely on the producer's readiness
    # Prints the topics as JSON: [{"error_code":0,"name":"product_updates",...}, ...]
    "$tansu" topic list --broker "tcp://$KAFKA_BOOTSTRAP_SERVERS" 2>/dev/null | grep -qF -- "\"name\":\"$TOPIC\""
}
# create_topic: creates $TOPIC with $TOPIC_PARTITIONS partitions unless it exists; true when it
# exists afterwards.
create_topic() {
    local tansu
    [[ "${KAFKA_SECURITY_PROTOCOL:-plaintext}" == plaintext ]] || return 1
    tansu="$(find_tansu)" || return 1
    topic_exists && return 0
    "$tansu" topic create "$TOPIC" --partitions "$TOPIC_PARTITIONS" \
        --broker "tcp://$KAFKA_BOOTSTRAP_SERVERS" >/dev/null 2>&1 || true
    topic_exists
}

# Everything scale-consumers.sh needs to start more consumers like these.
{
    declare -px DATABASE_URL KAFKA_BOOTSTRAP_SERVERS SCHEMA_REGISTRY_URL TOPIC TOPIC_PARTITIONS \
        WATERMARK_PATH CONSUMER_LOGS_DIR CONSUMER_GROUP CONSUMER_RESUME_REWIND_RECORDS PRODUCTS_CSV \
        LOG_FORMAT RUST_LOG
    for v in KAFKA_SECURITY_PROTOCOL KAFKA_SASL_MECHANISM KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD \
        SCHEMA_REGISTRY_USERNAME SCHEMA_REGISTRY_PASSWORD; do
        if [[ -n "${!v:-}" ]]; then declare -px "$v"; fi
    done
    printf 'BIN_DIR=%q\n' "$BIN_DIR"
} >"$NATIVE_DIR/env.sh"
chmod 600 "$NATIVE_DIR/env.sh"

# launch_consumers: starts the $CONSUMERS consumers at once (each claims the lowest free slot);
# LAUNCHED_KEYS lists them for await_consumers.
LAUNCHED_KEYS=()
launch_consumers() {
    local i
    for ((i = 1; i <= CONSUMERS; i++)); do
        launch_consumer "$BIN_DIR"
        LAUNCHED_KEYS+=("$LAUNCHED_KEY")
    done
}
await_consumers() {
    local key
    for key in "${LAUNCHED_KEYS[@]}"; do
        await_consumer_slot "$key"
        info "consumer_$STARTED_SLOT: up (pid $(read_pidfile "$NATIVE_DIR/consumer_$STARTED_SLOT.pid")) at http://127.0.0.1:$((CONSUMER_PORT_BASE + STARTED_SLOT))"
    done
}

CONSUMERS_LAUNCHED=""
if create_topic; then
    info "topic $TOPIC: ready; starting $CONSUMERS consumers while the other services start"
    launch_consumers
    CONSUMERS_LAUNCHED=1
fi

# --- database -----------------------------------------------------------------------------------
case "$DATABASE_URL" in
mysql://*@127.0.0.1:3306/* | mysql://*@localhost:3306/* | mariadb://*@127.0.0.1:3306/*)
    ensure_mariadb "$NATIVE_DIR/mariadb.pid"
    db_name="${DATABASE_URL##*/}"
    db_name="${db_name%%\?*}"
    [[ "$db_name" =~ ^[A-Za-z0-9_]+$ ]] || die "cannot tell the database name from DATABASE_URL"
    mariadb_client --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot \
        -e "CREATE DATABASE IF NOT EXISTS \`$db_name\`" || die "could not create database $db_name"
    info "MySQL: MariaDB on $MYSQL_HOST:$MYSQL_PORT, database $db_name"
    ;;
*) info "MySQL: using DATABASE_URL as given (not the local MariaDB)" ;;
esac

# --- schema registry ----------------------------------------------------------------------------
if http_ok "$SCHEMA_REGISTRY_URL/health" || http_ok "$SCHEMA_REGISTRY_URL/subjects"; then
    info "schema registry: already answering at $SCHEMA_REGISTRY_URL; using it"
elif [[ "$SCHEMA_REGISTRY_URL" == "http://$REGISTRY_HOST:$REGISTRY_PORT" ]]; then
    REGISTRY_ADDR="$REGISTRY_HOST:$REGISTRY_PORT" REGISTRY_DATA_FILE="$TESTBED_DIR/registry-native.json" \
        start_service dev-schema-registry "$BIN_DIR/dev-schema-registry" \
        "$NATIVE_LOG_DIR/registry.log" "$NATIVE_DIR/registry.pid"
    wait_until 30 "the schema registry" http_ok "$SCHEMA_REGISTRY_URL/health" \
        || die "dev-schema-registry did not answer (log: $NATIVE_LOG_DIR/registry.log)"
    info "schema registry: dev-schema-registry at $SCHEMA_REGISTRY_URL"
else
    die "SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL does not answer"
fi

# --- services -----------------------------------------------------------------------------------
# start_http_service NAME ADDR [PATH]: starts target/<profile>/NAME with HTTP_ADDR=ADDR, waits
# until PATH (default /health) answers 200.
start_http_service() {
    local name="$1" addr="$2" path="${3:-/health}"
    HTTP_ADDR="$addr" start_service "$name" "$BIN_DIR/$name" "$NATIVE_LOG_DIR/$name.log" "$NATIVE_DIR/$name.pid"
    if ! wait_until 60 "$name on http://$addr$path" service_healthy "$NATIVE_DIR/$name.pid" "http://$addr$path"; then
        tail -n 30 "$NATIVE_LOG_DIR/$name.log" >&2 || true
        die "$name did not become healthy (log: $NATIVE_LOG_DIR/$name.log)"
    fi
    info "$name: up (pid $(read_pidfile "$NATIVE_DIR/$name.pid")) at http://$addr"
}
service_healthy() {
    pid_alive "$(read_pidfile "$1")" || return 2
    http_ok "$2"
}

# The producer starts once the updater is ready, i.e. has migrated the database: it picks the
# capture index at start, and a migration running meanwhile may replace that index.
start_http_service product-updater "$UPDATER_ADDR" /ready
start_http_service producer "$PRODUCER_ADDR"

if [[ -z "$CONSUMERS_LAUNCHED" ]]; then
    producer_ready_and_topic() {
        http_ok "http://$PRODUCER_ADDR/ready" && topic_exists
    }
    wait_until 90 "the producer to be ready and topic $TOPIC to exist" producer_ready_and_topic \
        || warn "producer not ready or topic $TOPIC not visible yet; starting consumers anyway (they wait for the topic)"
    launch_consumers
fi
await_consumers

# --- where things are ---------------------------------------------------------------------------
print_endpoints() {
    echo
    echo "pipeline is running:"
    printf '  %-16s %s\n' "product-updater" "http://$UPDATER_ADDR/metrics"
    printf '  %-16s %s\n' "producer" "http://$PRODUCER_ADDR/metrics"
    local slot port
    for slot in $(running_consumer_slots); do
        port=$((CONSUMER_PORT_BASE + slot))
        printf '  %-16s %s   %s\n' "consumer_$slot" "http://127.0.0.1:$port/metrics" "http://127.0.0.1:$port/assignments"
    done
    printf '  %-16s %s\n' "schema registry" "$SCHEMA_REGISTRY_URL/subjects"
    echo "  records:   $CONSUMER_LOGS_DIR/consumer_N/consumer_log.json"
    echo "  logs:      .testbed/logs/*.log"
    echo "  scale:     scripts/scale-consumers.sh N"
    if [[ -n "$DURATION" ]]; then
        echo "  stops by itself after ${DURATION}s (or on Ctrl-C)"
    else
        echo "  stop:      Ctrl-C"
    fi
    echo
}
print_endpoints

if [[ -n "$FOLLOW" ]]; then
    tail -n 0 -F "$NATIVE_LOG_DIR"/*.log &
    echo $! >"$NATIVE_DIR/follow.pid"
fi

# --- watch until stopped ------------------------------------------------------------------------
# A service that exits by itself stops the whole run with an error (and its last log lines).
check_alive() {
    local f name proc pid
    for f in "$NATIVE_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        name="${f##*/}"
        name="${name%.pid}"
        case "$name" in
        run | follow | mariadb | consumer.starting.*) continue ;;
        registry) proc=dev-schema-registry ;;
        consumer_*) proc=consumer ;;
        *) proc="$name" ;;
        esac
        pid="$(read_pidfile "$f")"
        [[ -f "$f" ]] || continue # removed meanwhile by scale-consumers.sh
        if ! pid_is "$pid" "$proc"; then
            [[ -f "$f" ]] || continue # stopped on purpose meanwhile (scale-consumers.sh)
            local rc=0 log="$NATIVE_LOG_DIR/$name.log"
            wait "$pid" 2>/dev/null || rc=$?
            [[ "$name" == registry ]] && log="$NATIVE_LOG_DIR/registry.log"
            rm -f "$f"
            tail -n 30 "$log" >&2 2>/dev/null || true
            die "$name (pid $pid) exited unexpectedly (exit status $rc; log: $log)"
        fi
    done
}

report_progress() {
    local slot lines parts=()
    for slot in $(running_consumer_slots); do
        lines=0
        if [[ -f "$CONSUMER_LOGS_DIR/consumer_$slot/consumer_log.json" ]]; then
            lines="$(wc -l <"$CONSUMER_LOGS_DIR/consumer_$slot/consumer_log.json")"
        fi
        parts+=("consumer_$slot=$lines")
    done
    info "records written: ${parts[*]:-(no consumers)}"
}

started_at=$SECONDS
last_report=$SECONDS
while true; do
    check_alive
    if [[ -n "$DURATION" ]] && ((SECONDS - started_at >= DURATION)); then
        info "ran for ${DURATION}s"
        report_progress
        break
    fi
    if ((SECONDS - last_report >= 15)); then
        report_progress
        last_report=$SECONDS
    fi
    sleep 1
done
exit 0
