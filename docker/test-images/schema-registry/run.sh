#!/bin/bash
# Command of the Schema Registry stand-in (tools/dev-schema-registry; scripts/compose-images.sh).
# It reads the variables docker-compose.yml gives confluentinc/cp-schema-registry:
#
#   SCHEMA_REGISTRY_HOST_NAME                     required, as by the real image
#   SCHEMA_REGISTRY_LISTENERS                     the first http:// URL is where it listens
#                                                 (default http://0.0.0.0:8081)
#   SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS  required, as by the real image, but unused
#
# Gap: the real registry keeps schemas in Kafka (the _schemas topic, so in the broker's volume);
# this one keeps them in a file of the container (REGISTRY_DATA_FILE), which survives a restart
# of the container but not its removal (`docker compose down`). It is development code: never a
# deployment's registry.
set -euo pipefail

die() {
    printf 'schema registry stand-in: ERROR: %s\n' "$*" >&2
    exit 1
}

[[ -n "${SCHEMA_REGISTRY_HOST_NAME:-}" ]] || die "SCHEMA_REGISTRY_HOST_NAME is required"
[[ -n "${SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS:-}" ]] \
    || die "SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS is required"
listener=""
IFS=, read -r -a urls <<<"${SCHEMA_REGISTRY_LISTENERS:-http://0.0.0.0:8081}"
for url in "${urls[@]}"; do
    if [[ "$url" == http://* ]]; then
        listener="${url#http://}"
        listener="${listener%%/*}"
        break
    fi
done
[[ -n "$listener" ]] || die "SCHEMA_REGISTRY_LISTENERS=${SCHEMA_REGISTRY_LISTENERS:-} has no http:// URL (the stand-in has no TLS)"
export REGISTRY_ADDR="$listener"
export REGISTRY_DATA_FILE="${REGISTRY_DATA_FILE:-/var/lib/schema-registry/schemas.json}"
exec /usr/local/bin/dev-schema-registry
