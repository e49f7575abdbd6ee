#!/usr/bin/env bash
# End-to-end test of the native run (scripts/run-native.sh) against the real broker, database
# and services:
#
#   scripts/e2e-native.sh
#
#   1. starts run-native.sh (debug build unless E2E_PROFILE=release; bounded by --duration) on a
#      fresh topic, consumer group, database and output directory of its own
#   2. the five consumers each own 2 of the 10 partitions (their /assignments), all 10 covered
#   3. the logs fill: every consumer_N/consumer_log.json gets records, each line a JSON object
#      with the product fields and where it came from; all seeded products arrive
#   4. scale-consumers.sh 7 adds consumer_6 and consumer_7 (partitions move to them), and
#      scale-consumers.sh 5 removes exactly those two again
#   5. SIGTERM to run-native.sh (what Ctrl-C does) stops everything it started: its process
#      exits, no process it recorded is left, its ports are closed; a broker or database that
#      was running before it is still running
#
# Prints "N passed, N failed" and exits non-zero when any check failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

PROFILE_FLAG=(--debug)
[[ "${E2E_PROFILE:-debug}" == release ]] && PROFILE_FLAG=()
DURATION="${E2E_DURATION:-600}"       # safety bound: the test stops the run itself when done
STARTUP_TIMEOUT="${E2E_STARTUP_TIMEOUT:-1800}" # includes building the services
CONVERGE_TIMEOUT="${E2E_CONVERGE_TIMEOUT:-180}"

RUN_ID="e2e_$(date +%s)_$$"
WORK="$TESTBED_DIR/e2e/$RUN_ID" # kept after the run for a look; earlier runs' are removed
rm -rf "$TESTBED_DIR/e2e"
mkdir -p "$WORK/consumer_logs" "$WORK/time_track"

export TOPIC="$RUN_ID"
export CONSUMER_GROUP="$RUN_ID"
export DATABASE_URL="mysql://root@$MYSQL_HOST:$MYSQL_PORT/${RUN_ID}_db"
export CONSUMER_LOGS_DIR="$WORK/consumer_logs"
export WATERMARK_PATH="$WORK/time_track/last_read_timestamp.json"
export UPDATES_PER_SECOND="${UPDATES_PER_SECOND:-5}"

PASSED=0
FAILED=0
pass() {
    PASSED=$((PASSED + 1))
    info "PASS: $*"
}
fail() {
    FAILED=$((FAILED + 1))
    info "FAIL: $*"
}

# What runs before the test and must still run after it.
kafka_before=""
mysql_before=""
port_open "$KAFKA_HOST" "$KAFKA_PORT" && kafka_before=1
mysql_alive && mysql_before=1

RUN_OUT="$WORK/run-native.out"
info "starting scripts/run-native.sh ${PROFILE_FLAG[*]} --duration $DURATION (output: $RUN_OUT)"
scripts/run-native.sh "${PROFILE_FLAG[@]}" --duration "$DURATION" >"$RUN_OUT" 2>&1 &
RUN_PID=$!

finish() {
    local rc=$?
    if pid_alive "$RUN_PID"; then
        kill -TERM "$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
    fi
    if [[ -n "$mysql_before" ]] || mysql_alive; then
        mariadb_client --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot \
            -e "DROP DATABASE IF EXISTS \`${RUN_ID}_db\`" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap finish EXIT

# --- 1. start-up ----------------------------------------------------------------------------------
run_started() {
    pid_alive "$RUN_PID" || return 2
    grep -q '^pipeline is running:' "$RUN_OUT"
}
if ! wait_until "$STARTUP_TIMEOUT" "run-native.sh to start the pipeline" run_started; then
    tail -n 40 "$RUN_OUT" >&2 || true
    fail "run-native.sh did not start the pipeline"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi
pass "run-native.sh started the pipeline"

# Everything it started, with the executable each pid must be (read now, while it runs).
declare -A STARTED=()
for f in "$NATIVE_DIR"/*.pid; do
    name="${f##*/}"
    name="${name%.pid}"
    case "$name" in
    run) continue ;;
    registry) STARTED["$(read_pidfile "$f")"]=dev-schema-registry ;;
    consumer_*) STARTED["$(read_pidfile "$f")"]=consumer ;;
    mariadb) STARTED["$(read_pidfile "$f")"]=mariadbd ;;
    *) STARTED["$(read_pidfile "$f")"]="$name" ;;
    esac
done

# --- assignments ----------------------------------------------------------------------------------
# assignments_ok EXPECTED_SLOTS...: exactly these slots answer, 10 partitions split 2 per consumer
# when there are 5, all 10 covered without overlap in any case.
assignments_ok() {
    local slots=("$@") slot answers=()
    for slot in "${slots[@]}"; do
        answers+=("$(curl --silent --fail --max-time 3 "http://127.0.0.1:$((CONSUMER_PORT_BASE + slot))/assignments" || echo '{}')")
    done
    printf '%s\n' "${answers[@]}" >"$WORK/assignments.last"
    python3 - "$WORK/assignments.last" "$TOPIC" "${slots[@]}" <<'PY'
import json, sys
path, topic, slots = sys.argv[1], sys.argv[2], sys.argv[3:]
reports = [json.loads(line) for line in open(path) if line.strip()]
owned = []
for slot, report in zip(slots, reports):
    if report.get("slot") != f"consumer_{slot}" or report.get("topic", topic) != topic:
        sys.exit(1)
    owned.append(sorted(report.get("partitions", [])))
flat = [p for parts in owned for p in parts]
if sorted(flat) != list(range(10)):
    sys.exit(1)
if len(slots) == 5 and any(len(parts) != 2 for parts in owned):
    sys.exit(1)
if any(len(parts) == 0 for parts in owned) and len(slots) <= 10:
    sys.exit(1)
PY
}

# show_rebalances SLOTS...: the last rebalance lines of these consumers' logs, so that a group
# that did not settle can be understood from the test output alone.
show_rebalances() {
    local slot log
    for slot in "$@"; do
        log="$NATIVE_LOG_DIR/consumer_$slot.log"
        [[ -f "$log" ]] || continue
        info "consumer_$slot, last rebalance lines of $log:"
        grep -E 'partitions (assigned|released)|assignment lost|rebalance error|assign failed|unassign failed|consumer error' "$log" \
            | tail -n 6 | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    /' || true
    done
}

if wait_until "$CONVERGE_TIMEOUT" "5 consumers with 2 partitions each" assignments_ok 1 2 3 4 5; then
    pass "consumer_1..consumer_5 own 2 partitions each, all 10 covered: $(tr '\n' ' ' <"$WORK/assignments.last")"
else
    fail "assignments did not settle to 2 partitions per consumer: $(tr '\n' ' ' <"$WORK/assignments.last")"
    show_rebalances 1 2 3 4 5
fi

# --- logs fill ------------------------------------------------------------------------------------
# The products seeded from the CSV (those the database accepted) must all reach the logs.
seeded_ids() {
    local csv_ids
    csv_ids="$(tail -n +2 data/products.csv | cut -d, -f1 | grep -E '^[0-9]+$' | sort -un | paste -sd, -)"
    mariadb_client --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot -N -B "${RUN_ID}_db" \
        -e "SELECT id FROM product WHERE id IN ($csv_ids)" 2>/dev/null
}
logs_ok() {
    seeded_ids >"$WORK/seeded.ids" || return 1
    [[ -s "$WORK/seeded.ids" ]] || return 1
    python3 - "$CONSUMER_LOGS_DIR" "$WORK/seeded.ids" >"$WORK/logs.last" 2>&1 <<'PY'
import json, os, sys
root = sys.argv[1]
seeded = {int(line) for line in open(sys.argv[2]) if line.strip()}
required = {"id", "name", "category", "price", "last_updated", "partition", "offset"}
ids, counts = set(), {}
for n in range(1, 6):
    path = os.path.join(root, f"consumer_{n}", "consumer_log.json")
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    counts[f"consumer_{n}"] = len(lines)
    for line in lines:
        record = json.loads(line)
        missing = required - record.keys()
        if missing:
            print(f"{path}: a line lacks {sorted(missing)}: {line}")
            sys.exit(2)
        if record["category"] is not None and record["category"] != record["category"].upper():
            print(f"{path}: category not upper-cased: {line}")
            sys.exit(2)
        ids.add(int(record["id"]))
print(f"records per consumer {counts}; {len(seeded & ids)} of the {len(seeded)} seeded products arrived")
sys.exit(0 if all(counts.values()) and seeded <= ids else 1)
PY
}
if wait_until "$CONVERGE_TIMEOUT" "every consumer log to fill with all seeded products" logs_ok; then
    pass "logs filled: $(cat "$WORK/logs.last")"
else
    fail "logs did not fill: $(cat "$WORK/logs.last")"
fi

# --- scaling --------------------------------------------------------------------------------------
if scripts/scale-consumers.sh 7 >"$WORK/scale-up.out" 2>&1; then
    for f in "$NATIVE_DIR"/consumer_6.pid "$NATIVE_DIR"/consumer_7.pid; do
        [[ -f "$f" ]] && STARTED["$(read_pidfile "$f")"]=consumer
    done
    if wait_until "$CONVERGE_TIMEOUT" "7 consumers sharing the 10 partitions" assignments_ok 1 2 3 4 5 6 7; then
        pass "scaled to 7: $(tr '\n' ' ' <"$WORK/assignments.last")"
    else
        fail "after scaling to 7 the partitions were not shared by all 7: $(tr '\n' ' ' <"$WORK/assignments.last")"
        show_rebalances 1 2 3 4 5 6 7
    fi
else
    fail "scale-consumers.sh 7 failed: $(tail -n 5 "$WORK/scale-up.out")"
fi
if scripts/scale-consumers.sh 5 >"$WORK/scale-down.out" 2>&1; then
    if [[ "$(running_consumer_slots | tr '\n' ' ')" == "1 2 3 4 5 " ]] \
        && ! port_open 127.0.0.1 $((CONSUMER_PORT_BASE + 6)) && ! port_open 127.0.0.1 $((CONSUMER_PORT_BASE + 7)); then
        pass "scaled back to 5: consumer_6 and consumer_7 stopped"
    else
        fail "scaling back to 5 left slots: $(running_consumer_slots | tr '\n' ' ')"
    fi
    if wait_until "$CONVERGE_TIMEOUT" "5 consumers with 2 partitions each again" assignments_ok 1 2 3 4 5; then
        pass "back to 2 partitions per consumer: $(tr '\n' ' ' <"$WORK/assignments.last")"
    else
        fail "after scaling back the assignments did not settle: $(tr '\n' ' ' <"$WORK/assignments.last")"
        show_rebalances 1 2 3 4 5
    fi
else
    fail "scale-consumers.sh 5 failed: $(tail -n 5 "$WORK/scale-down.out")"
fi

# --- clean shutdown ---------------------------------------------------------------------------------
info "sending SIGTERM to run-native.sh (pid $RUN_PID), as Ctrl-C would"
kill -TERM "$RUN_PID"
deadline=$((SECONDS + 120))
while pid_alive "$RUN_PID" && ((SECONDS < deadline)); do sleep 0.5; done
if pid_alive "$RUN_PID"; then
    fail "run-native.sh still running 120s after SIGTERM"
else
    rc=0
    wait "$RUN_PID" || rc=$?
    if ((rc == 143 || rc == 0)); then
        pass "run-native.sh stopped on SIGTERM (exit $rc)"
    else
        fail "run-native.sh exited $rc on SIGTERM: $(tail -n 20 "$RUN_OUT")"
    fi
fi
grep -q 'exited unexpectedly' "$RUN_OUT" && fail "a service crashed during the run: $(grep 'exited unexpectedly' "$RUN_OUT")"

left=()
for pid in "${!STARTED[@]}"; do
    pid_is "$pid" "${STARTED[$pid]}" && left+=("${STARTED[$pid]}($pid)")
done
if ((${#left[@]} == 0)); then
    pass "no process it started is left (${#STARTED[@]} checked: ${STARTED[*]})"
else
    fail "processes left running: ${left[*]}"
fi
open_ports=()
for port in 9101 9102 $(seq $((CONSUMER_PORT_BASE + 1)) $((CONSUMER_PORT_BASE + 7))); do
    port_open 127.0.0.1 "$port" && open_ports+=("$port")
done
if ((${#open_ports[@]} == 0)) && ! compgen -G "$NATIVE_DIR/*.pid" >/dev/null; then
    pass "its ports are closed and its pid files removed"
else
    fail "still open: ports ${open_ports[*]:-none}; pid files: $(find "$NATIVE_DIR" -name '*.pid' -printf '%f ' 2>/dev/null)"
fi
if [[ -n "$kafka_before" ]]; then
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        pass "the broker that ran before is still running"
    else
        fail "the broker that ran before the test was stopped"
    fi
fi
if [[ -n "$mysql_before" ]]; then
    if mysql_alive; then
        pass "the MariaDB that ran before is still running"
    else
        fail "the MariaDB that ran before the test was stopped"
    fi
fi

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
