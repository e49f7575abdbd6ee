#!/usr/bin/env bash
# Lists where the services of a running `docker compose up` answer on this host, and with
# --assignments also prints each consumer replica's /assignments.
#
#   scripts/compose-endpoints.sh [--assignments]
#
# Consumer replicas publish container port 8080 on ephemeral host ports; `docker compose port
# --index I consumer 8080` tells which. Replica index I is Docker's numbering, not the slot: the
# slot (consumer_N) is in each replica's /assignments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

show_assignments=""
[[ "${1:-}" == --assignments ]] && show_assignments=1

dc=(docker compose)
printf '%-18s %s\n' product-updater "http://127.0.0.1:9101/metrics"
printf '%-18s %s\n' producer "http://127.0.0.1:9102/metrics"
replicas="$("${dc[@]}" ps --quiet consumer | wc -l)"
for ((i = 1; i <= replicas; i++)); do
    addr="$("${dc[@]}" port --index "$i" consumer 8080)" || continue
    printf '%-18s %s   %s\n' "consumer #$i" "http://$addr/metrics" "http://$addr/assignments"
    if [[ -n "$show_assignments" ]]; then
        curl --silent --max-time 3 "http://$addr/assignments" || echo "(no answer)"
        echo
    fi
done
printf '%-18s %s\n' "schema registry" "http://127.0.0.1:8081/subjects"
if [[ -n "$("${dc[@]}" ps --quiet prometheus 2>/dev/null)" ]]; then
    printf '%-18s %s\n' prometheus "http://127.0.0.1:9090/targets"
    printf '%-18s %s\n' grafana "http://127.0.0.1:3000/"
fi
