#!/bin/bash
# Command of the Kafka stand-in (tansu; scripts/compose-images.sh), installed where the
# apache/kafka image has its own: /etc/kafka/docker/run. It reads the KAFKA_* variables
# docker-compose.yml gives the real broker and starts tansu accordingly:
#
#   KAFKA_LISTENERS, KAFKA_ADVERTISED_LISTENERS, KAFKA_LISTENER_SECURITY_PROTOCOL_MAP,
#   KAFKA_INTER_BROKER_LISTENER_NAME, KAFKA_CONTROLLER_LISTENER_NAMES
#       the inter-broker listener is tansu's own (listening on its port on every interface,
#       advertising its advertised address); every other non-controller listener is a tansu
#       proxy on its port that advertises its own address and forwards to the broker. Tansu
#       has no KRaft controller: controller listeners are not opened. PLAINTEXT only.
#   KAFKA_LOG_DIRS      tansu's SQLite database goes to <first dir>/tansu.db (default
#                       /tmp/kraft-combined-logs, as in the real image)
#   CLUSTER_ID          tansu's cluster id
#   KAFKA_PROCESS_ROLES must include broker
#   KAFKA_AUTO_CREATE_TOPICS_ENABLE  must be false: tansu never creates a topic on first use
#   TANSU_LOG           tansu's own log filter (default warn)
#
# Gaps (what the real broker does and this one cannot): through a proxy listener (the host's
# 127.0.0.1:29092) metadata, produce and fetch work, but the group coordinator found there is the
# broker's inter-broker address (kafka:9092), so consumer groups work only from inside the
# compose network. Other KAFKA_* settings (node id, replication factors, rebalance delay) have no
# tansu equivalent and are listed in the log as ignored.
set -euo pipefail

say() { printf 'kafka stand-in (tansu): %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

TANSU=/usr/local/bin/tansu

roles="${KAFKA_PROCESS_ROLES:-broker,controller}"
[[ ",$roles," == *,broker,* ]] || die "KAFKA_PROCESS_ROLES=$roles: only a broker can be stood in for"
auto_create="${KAFKA_AUTO_CREATE_TOPICS_ENABLE:-true}"
[[ "$auto_create" == false ]] \
    || die "KAFKA_AUTO_CREATE_TOPICS_ENABLE=$auto_create: tansu never creates a topic on first use; set it to false and create topics (kafka-topics.sh --create)"

listeners="${KAFKA_LISTENERS:-PLAINTEXT://:9092,CONTROLLER://:9093}"
advertised="${KAFKA_ADVERTISED_LISTENERS:-}"
protocol_map="${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:-PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT}"
inter_broker="${KAFKA_INTER_BROKER_LISTENER_NAME:-PLAINTEXT}"
controllers=",${KAFKA_CONTROLLER_LISTENER_NAMES:-CONTROLLER},"
log_dir="${KAFKA_LOG_DIRS:-/tmp/kraft-combined-logs}"
log_dir="${log_dir%%,*}"

# value_of NAME LIST: the value after "NAME:" or "NAME://" in a comma-separated LIST.
value_of() {
    local name="$1" item
    local IFS=,
    for item in $2; do
        if [[ "$item" == "$name://"* ]]; then
            echo "${item#"$name://"}"
            return 0
        elif [[ "$item" == "$name:"* ]]; then
            echo "${item#"$name:"}"
            return 0
        fi
    done
    return 1
}

broker_args=()
proxies=()
IFS=, read -r -a items <<<"$listeners"
for item in "${items[@]}"; do
    [[ "$item" == *://* ]] || die "KAFKA_LISTENERS: '$item' is not NAME://HOST:PORT"
    name="${item%%://*}"
    address="${item#*://}"
    port="${address##*:}"
    host="${address%:*}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "KAFKA_LISTENERS: '$item' has no port"
    if [[ "$controllers" == *",$name,"* ]]; then
        say "listener $name (controller, port $port) not opened: tansu has no KRaft controller"
        continue
    fi
    protocol="$(value_of "$name" "$protocol_map")" || protocol="$name"
    [[ "$protocol" == PLAINTEXT ]] \
        || die "listener $name uses $protocol: the tansu stand-in speaks PLAINTEXT only"
    public="$(value_of "$name" "$advertised")" || public="${host:-localhost}:$port"
    listen="tcp://${host:-0.0.0.0}:$port"
    if [[ "$name" == "$inter_broker" ]]; then
        broker_args=(--listener-url "$listen" --advertised-listener-url "tcp://$public")
        broker_port="$port"
    else
        proxies+=("$listen|tcp://$public")
    fi
done
((${#broker_args[@]})) \
    || die "KAFKA_LISTENERS has no listener named $inter_broker (KAFKA_INTER_BROKER_LISTENER_NAME)"

ignored=()
for name in $(compgen -e); do
    case "$name" in
    KAFKA_PROCESS_ROLES | KAFKA_AUTO_CREATE_TOPICS_ENABLE | KAFKA_LISTENERS | KAFKA_ADVERTISED_LISTENERS) ;;
    KAFKA_LISTENER_SECURITY_PROTOCOL_MAP | KAFKA_INTER_BROKER_LISTENER_NAME | KAFKA_CONTROLLER_LISTENER_NAMES) ;;
    KAFKA_LOG_DIRS) ;;
    KAFKA_*) ignored+=("$name") ;;
    esac
done
((${#ignored[@]} == 0)) || say "ignored (no tansu equivalent): ${ignored[*]}"

mkdir -p "$log_dir" || die "cannot create KAFKA_LOG_DIRS=$log_dir"
# Relative to the working directory (tansu drops the leading slash of sqlite:///abs/path).
storage="sqlite://tansu.db"
cluster_id="${CLUSTER_ID:-tansu_cluster}"
say "broker ${broker_args[*]}, storage $storage in $log_dir, cluster id $cluster_id"

export RUST_LOG="${TANSU_LOG:-warn}"
# This script stays PID 1 and stops tansu with SIGKILL: on SIGTERM tansu 0.6 stops its storage
# first and then keeps answering requests with errors until it is killed anyway. SQLite loses no
# committed transaction to a SIGKILL.
pids=()
# shellcheck disable=SC2317 # called by the trap
stop() {
    say "stopping"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait || true
    exit 0
}
trap stop TERM INT
cd "$log_dir"
"$TANSU" broker --cluster-id "$cluster_id" --storage-engine "$storage" "${broker_args[@]}" &
pids+=($!)
for proxy in "${proxies[@]}"; do
    say "proxy listening on ${proxy%%|*}, advertising ${proxy#*|}, to the broker on port $broker_port"
    "$TANSU" proxy --listener-url "${proxy%%|*}" --advertised-listener-url "${proxy#*|}" \
        --origin-url "tcp://127.0.0.1:$broker_port" &
    pids+=($!)
done
rc=0
wait -n || rc=$?
say "a tansu process exited (status $rc); stopping the others"
kill -KILL "${pids[@]}" 2>/dev/null || true
wait || true
exit "$rc"
