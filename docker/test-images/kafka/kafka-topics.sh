#!/bin/bash
# /opt/kafka/bin/kafka-topics.sh of the Kafka stand-in (tansu; scripts/compose-images.sh): the
# subset of Kafka's tool that docker-compose.yml (kafka-init) and the compose end-to-end test use,
# with the same output format:
#
#   kafka-topics.sh --bootstrap-server HOST:PORT --create [--if-not-exists] --topic NAME
#                   [--partitions N] [--replication-factor 1]
#   kafka-topics.sh --bootstrap-server HOST:PORT --describe [--topic NAME]
#   kafka-topics.sh --bootstrap-server HOST:PORT --list
#
# Any other option stops it with an error naming the option.
set -euo pipefail

die() {
    printf 'Error (kafka-topics.sh of the tansu stand-in): %s\n' "$*" >&2
    exit 1
}

TANSU=/usr/local/bin/tansu
bootstrap="" action="" topic="" partitions=1 replication="" if_not_exists=""
while (($#)); do
    case "$1" in
    --bootstrap-server) bootstrap="${2:-}" && shift 2 ;;
    --create | --describe | --list)
        [[ -z "$action" ]] || die "$action and $1 together"
        action="$1" && shift
        ;;
    --if-not-exists) if_not_exists=1 && shift ;;
    --topic) topic="${2:-}" && shift 2 ;;
    --partitions) partitions="${2:-}" && shift 2 ;;
    --replication-factor) replication="${2:-}" && shift 2 ;;
    *) die "option $1 is not supported" ;;
    esac
done
[[ -n "$bootstrap" ]] || die "--bootstrap-server is required"
[[ -n "$action" ]] || die "one of --create, --describe, --list is required"
broker="tcp://${bootstrap%%,*}"

topics_json() {
    "$TANSU" topic list --broker "$broker"
}

# base64url of the 16-byte topic id, as Kafka prints it.
topic_id() {
    local byte escaped=""
    for byte in "$@"; do
        escaped+="$(printf '\\%03o' "$byte")"
    done
    # shellcheck disable=SC2059 # the format is the escaped bytes, on purpose
    printf "$escaped" | base64 | tr '+/' '-_' | tr -d '=\n'
}

case "$action" in
--create)
    [[ -n "$topic" ]] || die "--topic is required with --create"
    [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "--partitions must be a positive number, got '$partitions'"
    [[ -z "$replication" || "$replication" == 1 ]] \
        || die "--replication-factor $replication: the stand-in is one broker, only 1 is possible"
    existing="$(topics_json)" || die "cannot reach the broker at $bootstrap"
    if jq -e --arg t "$topic" 'any(.[]; .name == $t)' <<<"$existing" >/dev/null; then
        [[ -n "$if_not_exists" ]] && exit 0
        die "Topic '$topic' already exists."
    fi
    "$TANSU" topic create "$topic" --partitions "$partitions" --broker "$broker" \
        || die "creating topic $topic failed"
    echo "Created topic $topic."
    ;;
--list)
    topics_json | jq -r '.[].name' | sort
    ;;
--describe)
    json="$(topics_json)" || die "cannot reach the broker at $bootstrap"
    names="$(jq -r --arg t "$topic" '.[] | select($t == "" or .name == $t) | .name' <<<"$json" | sort)"
    [[ -n "$names" || -z "$topic" ]] || die "Topic '$topic' does not exist as expected"
    while read -r name; do
        [[ -n "$name" ]] || continue
        read -r -a id_bytes <<<"$(jq -r --arg t "$name" '.[] | select(.name == $t) | .topic_id | map(tostring) | join(" ")' <<<"$json")"
        count="$(jq -r --arg t "$name" '.[] | select(.name == $t) | .partitions | length' <<<"$json")"
        printf 'Topic: %s\tTopicId: %s\tPartitionCount: %s\tReplicationFactor: 1\tConfigs: \n' \
            "$name" "$(topic_id "${id_bytes[@]}")" "$count"
        jq -r --arg t "$name" '.[] | select(.name == $t) | .partitions | sort_by(.partition_index)[]
            | "\tTopic: \($t)\tPartition: \(.partition_index)\tLeader: \(.leader_id)\tReplicas: \(.replica_nodes | map(tostring) | join(","))\tIsr: \(.isr_nodes | map(tostring) | join(","))"' <<<"$json"
    done <<<"$names"
    ;;
esac
