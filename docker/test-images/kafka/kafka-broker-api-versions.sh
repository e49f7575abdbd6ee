#!/bin/bash
# /opt/kafka/bin/kafka-broker-api-versions.sh of the Kafka stand-in (tansu;
# scripts/compose-images.sh), for docker-compose.yml's health check:
#
#   kafka-broker-api-versions.sh --bootstrap-server HOST:PORT
#
# Exits 0 when the broker answers a metadata request, non-zero otherwise. It does not list the
# API versions as Kafka's tool does (the health check discards the output).
set -euo pipefail

die() {
    printf 'Error (kafka-broker-api-versions.sh of the tansu stand-in): %s\n' "$*" >&2
    exit 1
}

bootstrap=""
while (($#)); do
    case "$1" in
    --bootstrap-server) bootstrap="${2:-}" && shift 2 ;;
    *) die "option $1 is not supported" ;;
    esac
done
[[ -n "$bootstrap" ]] || die "--bootstrap-server is required"
/usr/local/bin/tansu topic list --broker "tcp://${bootstrap%%,*}" >/dev/null \
    || die "no answer from $bootstrap"
echo "$bootstrap (tansu) answers"
