#!/usr/bin/env bash
# Changes the number of consumers of a running scripts/run-native.sh:
#
#   scripts/scale-consumers.sh N
#
# Starting: each new consumer claims the lowest free slot consumer_K and serves HTTP on 9110+K.
# Stopping: the highest slots go first, with SIGTERM (each finishes its batch, commits and leaves
# the group). The group then rebalances; watch it with curl http://127.0.0.1:911K/assignments.
# The consumers started here are stopped by run-native.sh when it stops.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

target="${1:-}"
if ! [[ "$target" =~ ^[0-9]+$ ]] || ((target > CONSUMER_MAX_SLOTS)); then
    die "usage: scripts/scale-consumers.sh N   (N from 0 to $CONSUMER_MAX_SLOTS)"
fi
native_run_active || die "scripts/run-native.sh is not running; start it first"
[[ -f "$NATIVE_DIR/env.sh" ]] || die "the native run has not started its consumers yet; try again in a moment"

# The same settings and binaries as the consumers run-native.sh started.
# shellcheck source=/dev/null
source "$NATIVE_DIR/env.sh"
unset HTTP_ADDR CONSUMER_SLOT
BIN_DIR="${BIN_DIR:?env.sh of the native run names no BIN_DIR}"

mapfile -t slots < <(running_consumer_slots)
current=${#slots[@]}
info "consumers running: $current (slots: ${slots[*]:-none}); wanted: $target"

if ((target > current)); then
    for ((i = current; i < target; i++)); do
        start_consumer "$BIN_DIR"
        info "started consumer_$STARTED_SLOT (pid $(read_pidfile "$NATIVE_DIR/consumer_$STARTED_SLOT.pid")) at http://127.0.0.1:$((CONSUMER_PORT_BASE + STARTED_SLOT))"
    done
elif ((target < current)); then
    # Highest slots first.
    mapfile -t to_stop < <(printf '%s\n' "${slots[@]}" | sort -rn | head -n $((current - target)))
    stop_consumers "${to_stop[@]}"
    info "their partitions move to the remaining consumers when the group notices they left (static"
    info "membership: at the latest after the session timeout, CONSUMER_SESSION_TIMEOUT_MS, 45 s by default)"
fi

mapfile -t slots < <(running_consumer_slots)
info "consumers running now: ${#slots[@]} (slots: ${slots[*]:-none})"
