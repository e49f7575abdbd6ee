#!/usr/bin/env bash
# The compose end-to-end test: docker-compose.yml run for real on this machine's Docker engine,
# step by step as the README's "With Docker" section tells a user, with the images
# scripts/compose-images.sh builds without a registry (docker-compose.test.yml swaps them in):
#
#   scripts/compose-e2e.sh
#
#   0. builds the images and checks that productstream:local has docker/Dockerfile's user,
#      working directory, environment, command, ports and health check
#   1. a fresh project folder (.testbed/compose-e2e/project: the compose files and deploy/) whose
#      consumer_logs/ and time_track/ belong to the user running the test (root on CI), not to the
#      containers' 1000:1000
#   2. `up -d`: every container healthy, the one-shots exited 0; the topic has 10 partitions
#      (kafka-topics.sh --describe); each of the five consumer replicas' /assignments, found with
#      `docker compose port --index I consumer 8080`, shows its own slot, a member id and 2
#      partitions, 10 in all; all seeded products in consumer_logs/consumer_*/consumer_log.json;
#      /metrics of the updater, the producer and every replica answers with its metrics
#   3. one replica's consumer process killed (SIGKILL, from the host: a crash) while changes flow:
#      it comes back (restart policy) into its own slot and the group into 2 partitions each;
#      then, with the updater stopped, the logs hold every product's latest change, every offset of
#      every partition once, nothing twice, in order per product ("the pipeline is consistent")
#   4. `docker compose restart kafka`, then `restart mysql`, while changes flow: consistent again
#   5. `up -d --scale consumer=7`: seven members, slots consumer_1..7 with their own folders, 10
#      partitions in all; `--scale consumer=5`: five again, 2 partitions each; consistent
#   6. `--profile observability up -d prometheus`: Prometheus' targets API lists the updater, the
#      producer and every replica as up (Grafana has no image that can be built here: it is not
#      packaged in Debian; deploy-check reads its provisioning)
#   7. `down`, then `up -d`: the broker's and the database's named volumes are kept, and the
#      pipeline goes on where it was: consistent (nothing lost, nothing twice, in order)
#   8. `down -v`: no container, volume or network of the project is left
#   9. `up -d` again in the same folder: healthy, and the new database's seeded products reach the
#      logs again (the consumers must not skip them for the old checkpoints); `down -v`
#
# Steps 1-9 hold /tmp/productstream-ports.lock (the compose file's fixed host ports) and always
# end with `down -v`, also on failure or Ctrl-C. The project is named productstream-e2e, so a
# `docker compose up` of your checkout is not touched.
#
# Settings: UPDATES_PER_SECOND (the compose file's change rate; default 20 here),
# COMPOSE_E2E_PROJECT (project name, default productstream-e2e), COMPOSE_E2E_HEALTHY_TIMEOUT
# (seconds for containers to become healthy, default 300), COMPOSE_E2E_CONVERGE_TIMEOUT (seconds
# for assignments and logs to settle, default 180). Prints the timings of each step and
# "N passed, N failed"; exits non-zero when any check failed. What it leaves for a look:
# .testbed/compose-e2e/ (the project folder, the last answers, and the containers' logs when a
# check failed).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

PROJECT="${COMPOSE_E2E_PROJECT:-productstream-e2e}"
WORK="$TESTBED_DIR/compose-e2e"
DIR="$WORK/project"
HEALTHY_TIMEOUT="${COMPOSE_E2E_HEALTHY_TIMEOUT:-300}"
CONVERGE_TIMEOUT="${COMPOSE_E2E_CONVERGE_TIMEOUT:-180}"
TOPIC=product_updates
PARTITIONS=10
export UPDATES_PER_SECOND="${UPDATES_PER_SECOND:-20}"

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

TIMING_NAMES=()
TIMING_SECONDS=()
# timing NAME STARTED: records SECONDS - STARTED under NAME.
timing() {
    TIMING_NAMES+=("$1")
    TIMING_SECONDS+=($((SECONDS - $2)))
    info "timing: $1: $(fmt_duration $((SECONDS - $2)))"
}

# dc ARGS...: `docker compose ARGS` in the project folder, as a user would type it there. The
# override and the project name come from COMPOSE_FILE and COMPOSE_PROJECT_NAME; UID and GID are
# not passed, as an interactive bash does not pass them either.
dc() {
    (cd "$DIR" && env -u UID -u GID docker compose "$@")
}

docker_answers || die "no Docker engine answers ('docker info' failed or timed out)"
ensure_compose_plugin || die "'docker compose' does not work"
info "$(docker compose version), engine $(docker version --format '{{.Server.Version}}')"

# --- 0. images ------------------------------------------------------------------------------------
started=$SECONDS
scripts/compose-images.sh || die "scripts/compose-images.sh failed"
timing "images (scripts/compose-images.sh)" "$started"
mkdir -p "$WORK"
docker image inspect productstream:local >"$WORK/image.json"
if python3 scripts/runtime-image.py check docker/Dockerfile "$WORK/image.json" >"$WORK/image-check.out"; then
    pass "productstream:local has docker/Dockerfile's user, workdir, env, command, ports and health check"
else
    fail "productstream:local differs from docker/Dockerfile's runtime stage: $(tr '\n' ';' <"$WORK/image-check.out")"
fi

# --- 1. project folder ----------------------------------------------------------------------------
take_ports_lock
export COMPOSE_FILE=docker-compose.yml:docker-compose.test.yml
export COMPOSE_PROJECT_NAME="$PROJECT"
unset COMPOSE_PROFILES
if [[ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" && -d "$DIR" ]]; then
    info "removing what an interrupted run left: docker compose down -v"
    dc --profile observability down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
fi
rm -rf "$DIR"
rm -f "$WORK"/*.log
mkdir -p "$DIR/consumer_logs" "$DIR/time_track"
cp docker-compose.yml docker-compose.test.yml "$DIR/"
cp -a deploy "$DIR/"
info "project folder $DIR, consumer_logs/ owned by $(stat -c %u:%g "$DIR/consumer_logs"); the containers run as 1000:1000"

summary() {
    local i
    echo
    echo "compose end-to-end timings:"
    for i in "${!TIMING_NAMES[@]}"; do
        printf '  %-58s %8s\n' "${TIMING_NAMES[$i]}" "$(fmt_duration "${TIMING_SECONDS[$i]}")"
    done
    printf '  %-58s %8s\n' total "$(fmt_duration "$SECONDS")"
}
finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]]; then
        dc logs --no-color --timestamps >"$WORK/compose.log" 2>&1 || true
        info "cleaning up: docker compose down -v (container logs in $WORK/compose.log)"
        dc --profile observability down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    fi
    summary
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

busy=()
for port in 3307 29092 8081 9101 9102 9090 3000; do
    port_open 127.0.0.1 "$port" && busy+=("$port")
done
((${#busy[@]} == 0)) || die "host ports ${busy[*]} are in use (by something not holding $PORTS_LOCK_FILE)"

# --- checks ---------------------------------------------------------------------------------------
# containers_ok CONSUMERS [SERVICE...]: the project's services (all of them, or those named) are
# up: one-shots exited 0, the others running and healthy, CONSUMERS consumer replicas.
containers_ok() {
    local consumers="$1"
    shift
    dc ps -a --format json "$@" >"$WORK/ps.json" 2>/dev/null || return 1
    python3 - "$WORK/ps.json" "$consumers" >"$WORK/ps.last" <<'PY'
import json, sys
text = open(sys.argv[1]).read().strip()
rows = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
one_shots = {"dirs-init", "kafka-init"}
bad, consumers = [], 0
for row in rows:
    service, state, health = row["Service"], row["State"], row.get("Health", "")
    if service in one_shots:
        if state != "exited" or row.get("ExitCode") != 0:
            bad.append(f"{row['Name']} {state} {row.get('Status', '')}")
    elif state != "running" or health != "healthy":
        bad.append(f"{row['Name']} {state} {health or 'no health'}")
    consumers += service == "consumer"
print(f"{len(rows)} containers, {consumers} consumers; not ready: {bad or 'none'}")
sys.exit(0 if not bad and (sys.argv[2] == "-" or consumers == int(sys.argv[2])) else 1)
PY
}

# consumer_address I: host address of consumer replica I's HTTP port, as the README finds it.
consumer_address() {
    dc port --index "$1" consumer 8080 2>/dev/null
}

# assignments_ok N: replicas 1..N answer /assignments with slots consumer_1..consumer_N (one
# each), the 10 partitions split between them without overlap, none empty, 2 each when N is 5.
assignments_ok() {
    local n="$1" i addr
    : >"$WORK/assignments.last"
    for ((i = 1; i <= n; i++)); do
        addr="$(consumer_address "$i")" || addr=""
        curl --silent --fail --max-time 3 "http://$addr/assignments" >>"$WORK/assignments.last" 2>/dev/null \
            || echo '{}' >>"$WORK/assignments.last"
        echo >>"$WORK/assignments.last"
    done
    python3 - "$WORK/assignments.last" "$n" "$TOPIC" "$PARTITIONS" <<'PY'
import json, sys
path, n, topic, partitions = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reports = [json.loads(l) for l in open(path) if l.strip()]
slots = sorted(r.get("slot", "") for r in reports)
if slots != sorted(f"consumer_{i}" for i in range(1, n + 1)):
    sys.exit(1)
owned = [sorted(r.get("partitions", [])) for r in reports]
if any(r.get("topic", topic) != topic for r in reports):
    sys.exit(1)
if sorted(p for parts in owned for p in parts) != list(range(partitions)):
    sys.exit(1)
if any(not parts for parts in owned) or (n == 5 and any(len(parts) != 2 for parts in owned)):
    sys.exit(1)
PY
}

# member_ids_ok: every report of the last assignments_ok shows a non-empty member id.
member_ids_ok() {
    python3 -c '
import json, sys
reports = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if reports and all(r.get("member_id") for r in reports) else 1)' "$WORK/assignments.last"
}

assignments_summary() {
    python3 - "$WORK/assignments.last" <<'PY'
import json, sys
reports = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(" ".join(f"{r.get('slot')}:{r.get('partitions')}:member_id={r.get('member_id')!r}" for r in reports))
PY
}

# mysql_query SQL: runs SQL in the compose database as root, tab-separated rows without headers.
mysql_query() {
    # shellcheck disable=SC2016 # expanded by the container's shell
    dc exec -T mysql sh -c 'mysql -uroot -p"$MYSQL_ROOT_PASSWORD" -N -B buy_online_db' <<<"$1" 2>/dev/null
}

# seeded_ids: the ids of data/products.csv that the database holds.
seeded_ids() {
    local csv_ids
    csv_ids="$(tail -n +2 data/products.csv | cut -d, -f1 | grep -E '^[0-9]+$' | sort -un | paste -sd, -)"
    mysql_query "SELECT id FROM product WHERE id IN ($csv_ids)"
}

# logs_ok SINCE: every seeded product has a line written at or after SINCE (RFC 3339 UTC) in
# consumer_logs/consumer_*/consumer_log.json, and each of consumer_1..consumer_5 wrote lines.
logs_ok() {
    seeded_ids >"$WORK/seeded.ids" || return 1
    [[ -s "$WORK/seeded.ids" ]] || return 1
    python3 - "$DIR/consumer_logs" "$WORK/seeded.ids" "$1" >"$WORK/logs.last" 2>&1 <<'PY'
import glob, json, os, sys
root, since = sys.argv[1], sys.argv[3]
seeded = {int(l) for l in open(sys.argv[2]) if l.strip()}
ids, counts = set(), {}
for n in range(1, 6):
    path = os.path.join(root, f"consumer_{n}", "consumer_log.json")
    lines = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
    lines = [r for r in lines if r["written_at"] >= since]
    counts[f"consumer_{n}"] = len(lines)
    ids.update(int(r["id"]) for r in lines)
print(f"lines since {since}: {counts}; {len(seeded & ids)} of the {len(seeded)} seeded products arrived")
sys.exit(0 if all(counts.values()) and seeded <= ids else 1)
PY
}

# serves URL METRIC: URL answers with a body that has a line starting with METRIC.
serves() {
    local body
    body="$(curl --silent --fail --max-time 3 "$1")" || return 1
    grep -q "^$2" <<<"$body"
}

# metrics_ok N: /metrics of the updater, the producer and consumer replicas 1..N answers with the
# service's own metrics.
metrics_ok() {
    local n="$1" i addr missing=()
    serves http://127.0.0.1:9101/metrics product_updater_rows_seeded_total \
        || missing+=("product-updater (127.0.0.1:9101)")
    serves http://127.0.0.1:9102/metrics producer_records_produced_total \
        || missing+=("producer (127.0.0.1:9102)")
    for ((i = 1; i <= n; i++)); do
        addr="$(consumer_address "$i")" || addr="?"
        serves "http://$addr/metrics" consumer_records_written_total || missing+=("consumer #$i ($addr)")
    done
    echo "${missing[*]:-}" >"$WORK/metrics.last"
    ((${#missing[@]} == 0))
}

# consistent SINCE: with the updater stopped, the pipeline has delivered everything, once, in order:
# - every product's current row (id, last_updated) is the last line of that product in the logs;
# - no (partition, offset) and no (id, last_updated) is logged twice;
# - each partition's offsets in the logs run from 0 without a gap;
# - each product stays on one partition, its changes in order of offset.
# Only lines written at or after SINCE count (the logs of an earlier project on the folder stay).
consistent() {
    mysql_query "SET time_zone = '+00:00'; SELECT id, CAST(UNIX_TIMESTAMP(last_updated) * 1000000 AS SIGNED) FROM product" \
        >"$WORK/db.rows" || return 1
    [[ -s "$WORK/db.rows" ]] || return 1
    python3 - "$DIR/consumer_logs" "$WORK/db.rows" "$1" >"$WORK/consistent.last" 2>&1 <<'PY'
import collections, glob, json, os, sys
root, since = sys.argv[1], sys.argv[3]
db = {int(i): int(m) for i, m in (l.split() for l in open(sys.argv[2]) if l.strip())}
records = []
for path in sorted(glob.glob(os.path.join(root, "consumer_*", "consumer_log.json"))):
    for line in open(path):
        r = json.loads(line)
        if r["written_at"] >= since:
            records.append(r)
problems = []
by_offset = collections.Counter((r["partition"], r["offset"]) for r in records)
twice = sorted(k for k, c in by_offset.items() if c > 1)
if twice:
    problems.append(f"{len(twice)} offsets logged more than once, e.g. {twice[:5]}")
by_change = collections.Counter((r["id"], r["last_updated_micros"]) for r in records)
dup_changes = sorted(k for k, c in by_change.items() if c > 1)
if dup_changes:
    problems.append(f"{len(dup_changes)} changes logged more than once, e.g. {dup_changes[:5]}")
offsets = collections.defaultdict(set)
for r in records:
    offsets[r["partition"]].add(r["offset"])
for partition, seen in sorted(offsets.items()):
    missing = sorted(set(range(max(seen) + 1)) - seen)
    if missing:
        problems.append(f"partition {partition}: offsets {missing[:10]}{'...' if len(missing) > 10 else ''} "
                        f"({len(missing)}) of 0..{max(seen)} are in no log")
last = {}
for r in sorted(records, key=lambda r: (r["partition"], r["offset"])):
    previous = last.get(r["id"])
    if previous and previous["partition"] != r["partition"]:
        problems.append(f"product {r['id']} on partitions {previous['partition']} and {r['partition']}")
    if previous and previous["last_updated_micros"] > r["last_updated_micros"]:
        problems.append(f"product {r['id']}: change {r['last_updated_micros']} after {previous['last_updated_micros']}")
    last[r["id"]] = r
behind = sorted(i for i, micros in db.items() if last.get(i, {}).get("last_updated_micros") != micros)
if behind:
    problems.append(f"{len(behind)} of the {len(db)} products' latest change is not the last logged, e.g. {behind[:10]}")
print(f"{len(records)} lines, {len(offsets)} partitions, {len(db)} products; "
      + ("; ".join(problems) if problems else "all delivered once, in order"))
sys.exit(1 if problems else 0)
PY
}

# quiesce_and_check WHAT SINCE: stops the updater, waits until the pipeline is consistent, starts
# the updater again.
quiesce_and_check() {
    local what="$1" since="$2"
    dc stop product-updater >/dev/null 2>&1 || fail "$what: docker compose stop product-updater failed"
    if wait_until "$CONVERGE_TIMEOUT" "the pipeline to deliver every change ($what)" consistent "$since"; then
        pass "$what: nothing lost, nothing twice, in order: $(cat "$WORK/consistent.last")"
    else
        fail "$what: $(cat "$WORK/consistent.last" 2>/dev/null)"
    fi
    dc start product-updater >/dev/null 2>&1 || fail "$what: docker compose start product-updater failed"
}

# --- 2. up ----------------------------------------------------------------------------------------
info "==> docker compose up -d"
RUN_SINCE="$(date -u +%Y-%m-%dT%H:%M:%S)"
started=$SECONDS
if dc up -d >"$WORK/up.out" 2>&1; then
    pass "docker compose up -d"
else
    fail "docker compose up -d: $(tail -n 5 "$WORK/up.out" | tr '\n' ' ')"
fi
if wait_until "$HEALTHY_TIMEOUT" "every container to be healthy" containers_ok 5; then
    pass "every container healthy, one-shots exited 0: $(cat "$WORK/ps.last")"
else
    fail "containers not healthy: $(cat "$WORK/ps.last" 2>/dev/null)"
fi
timing "up -d to every container healthy" "$started"
init_said="$(dc logs --no-log-prefix dirs-init 2>&1 | tr '\n' ' ')"
if [[ "$(stat -c %u:%g "$DIR/consumer_logs")" == 1000:1000 && "$(stat -c %u:%g "$DIR/time_track")" == 1000:1000 ]]; then
    pass "consumer_logs/ and time_track/ belong to the containers' 1000:1000: $init_said"
else
    fail "consumer_logs/ is $(stat -c %u:%g "$DIR/consumer_logs"), time_track/ $(stat -c %u:%g "$DIR/time_track"), not 1000:1000: $init_said"
fi

describe="$(dc exec -T kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 --describe --topic "$TOPIC" 2>&1 || true)"
if grep -q "PartitionCount: $PARTITIONS" <<<"$describe"; then
    pass "topic $TOPIC has $PARTITIONS partitions: $(head -n1 <<<"$describe")"
else
    fail "topic $TOPIC: $describe"
fi

if wait_until "$CONVERGE_TIMEOUT" "5 consumers with 2 partitions each" assignments_ok 5; then
    pass "consumer_1..consumer_5 own 2 partitions each, 10 in all: $(assignments_summary)"
else
    fail "assignments did not settle to 2 partitions per replica: $(assignments_summary)"
fi
if member_ids_ok; then
    pass "every replica's /assignments shows its member id"
else
    fail "a replica's /assignments shows no member id: $(assignments_summary)"
fi

if wait_until "$CONVERGE_TIMEOUT" "all seeded products in the logs" logs_ok "$RUN_SINCE"; then
    pass "logs filled: $(cat "$WORK/logs.last")"
else
    fail "logs did not fill: $(cat "$WORK/logs.last" 2>/dev/null)"
fi
timing "up -d to all seeded products in the logs" "$started"

if wait_until 60 "every service's /metrics" metrics_ok 5; then
    pass "/metrics of product-updater, producer and the 5 replicas answer with their metrics"
else
    fail "/metrics without the service's metrics: $(cat "$WORK/metrics.last")"
fi

# --- 3. a replica crashes ----------------------------------------------------------------------------
# The consumer process is killed with SIGKILL from the host, as a crash or the OOM killer would.
# (`docker kill` would not do: Docker counts it as a manual stop, which `restart: unless-stopped`
# respects, so the replica would stay down.)
victim="$PROJECT-consumer-3"
victim_report="$(curl --silent --max-time 3 "http://$(consumer_address 3)/assignments" || true)"
victim_slot="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("slot",""))' "${victim_report:-{\}}" 2>/dev/null || true)"
restarts_before="$(docker inspect --format '{{.RestartCount}}' "$victim" 2>/dev/null || echo 0)"
# crash CONTAINER: SIGKILL to the consumer process of CONTAINER (the child of its docker-init).
crash() {
    local init pid
    init="$(docker inspect --format '{{.State.Pid}}' "$1")" || return 1
    pid="$(pgrep -P "$init" -x consumer || true)"
    [[ -n "$pid" ]] || pid="$init"
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == consumer ]] || {
        warn "no consumer process in $1 (docker-init pid $init)"
        return 1
    }
    if [[ "$(id -u)" == 0 ]]; then
        kill -KILL "$pid"
    else
        sudo -n kill -KILL "$pid"
    fi
}
info "==> kill -KILL of the consumer process of $victim ($victim_report) while changes flow"
started=$SECONDS
crash "$victim" || fail "could not kill the consumer process of $victim"
back_in_slot() {
    local restarts addr report
    restarts="$(docker inspect --format '{{.RestartCount}}' "$victim" 2>/dev/null)" || return 1
    ((restarts > restarts_before)) || return 1
    addr="$(consumer_address 3)" || return 1
    report="$(curl --silent --fail --max-time 3 "http://$addr/assignments")" || return 1
    [[ "$report" == *"\"slot\":\"$victim_slot\""* ]]
}
if [[ -n "$victim_slot" ]] && wait_until "$CONVERGE_TIMEOUT" "$victim to restart into $victim_slot" back_in_slot; then
    pass "$victim restarted by its restart policy (restarts: $restarts_before -> $(docker inspect --format '{{.RestartCount}}' "$victim")) into its own slot $victim_slot"
else
    fail "$victim did not come back into slot ${victim_slot:-?}: $(docker inspect --format '{{.State.Status}} exit {{.State.ExitCode}}, restarts {{.RestartCount}}' "$victim" 2>&1)"
fi
if wait_until "$CONVERGE_TIMEOUT" "5 members with 2 partitions each after the crash" assignments_ok 5; then
    pass "after the crash: $(assignments_summary)"
else
    fail "after the crash the assignments did not settle: $(assignments_summary)"
fi
timing "crash of a replica to back in its slot" "$started"
started=$SECONDS
quiesce_and_check "crash of a replica" "$RUN_SINCE"
timing "consistency check after the crash" "$started"

# --- 4. restart the broker and the database ---------------------------------------------------------
for service in kafka mysql; do
    info "==> docker compose restart $service while changes flow"
    started=$SECONDS
    sleep 3 # changes in flight when it goes
    dc restart "$service" >"$WORK/restart-$service.out" 2>&1 \
        || fail "docker compose restart $service: $(tail -n 5 "$WORK/restart-$service.out" | tr '\n' ' ')"
    if wait_until "$HEALTHY_TIMEOUT" "every container healthy after restarting $service" containers_ok 5; then
        pass "every container healthy after restarting $service"
    else
        fail "after restarting $service: $(cat "$WORK/ps.last")"
    fi
    sleep 5 # changes made after it is back
    quiesce_and_check "docker compose restart $service" "$RUN_SINCE"
    timing "restart $service to consistent" "$started"
done
if assignments_ok 5; then
    pass "after the restarts: $(assignments_summary)"
else
    fail "after the restarts the assignments are: $(assignments_summary)"
fi

# --- 5. scale -------------------------------------------------------------------------------------
# After the crash and the restarts: the order of the original test, kept (with the cooperative
# assignor tansu 0.6 mixed up assignments after a scale; see docker/test-images/README.md).
info "==> docker compose up -d --scale consumer=7"
started=$SECONDS
dc up -d --scale consumer=7 >"$WORK/scale7.out" 2>&1 || fail "up -d --scale consumer=7: $(tail -n 5 "$WORK/scale7.out" | tr '\n' ' ')"
if wait_until "$HEALTHY_TIMEOUT" "7 healthy consumers" containers_ok 7 \
    && wait_until "$CONVERGE_TIMEOUT" "7 members sharing the 10 partitions" assignments_ok 7; then
    pass "scaled to 7: $(assignments_summary)"
else
    fail "after --scale consumer=7: $(cat "$WORK/ps.last"); $(assignments_summary)"
fi
if [[ -d "$DIR/consumer_logs/consumer_6" && -d "$DIR/consumer_logs/consumer_7" ]]; then
    pass "consumer_6 and consumer_7 have their own folders"
else
    fail "consumer_6/consumer_7 folders missing: $(find "$DIR/consumer_logs" -mindepth 1 -maxdepth 1 -printf '%f ')"
fi
timing "scale to 7 (all members with partitions)" "$started"

info "==> docker compose up -d --scale consumer=5"
started=$SECONDS
dc up -d --scale consumer=5 >"$WORK/scale5.out" 2>&1 || fail "up -d --scale consumer=5: $(tail -n 5 "$WORK/scale5.out" | tr '\n' ' ')"
if wait_until "$HEALTHY_TIMEOUT" "5 healthy consumers" containers_ok 5 \
    && wait_until "$CONVERGE_TIMEOUT" "5 members with 2 partitions each" assignments_ok 5; then
    pass "back to 5, slots consumer_1..5 with 2 partitions each: $(assignments_summary)"
else
    fail "after --scale consumer=5: $(cat "$WORK/ps.last"); $(assignments_summary)"
fi
timing "scale back to 5 (2 partitions each)" "$started"
started=$SECONDS
quiesce_and_check "scaling to 7 and back to 5" "$RUN_SINCE"
timing "consistency check after scaling" "$started"

# --- 6. observability ---------------------------------------------------------------------------------
info "==> docker compose --profile observability up -d prometheus"
started=$SECONDS
dc --profile observability up -d prometheus >"$WORK/prometheus.out" 2>&1 \
    || fail "up prometheus: $(tail -n 5 "$WORK/prometheus.out" | tr '\n' ' ')"
targets_ok() {
    curl --silent --fail --max-time 3 http://127.0.0.1:9090/api/v1/targets >"$WORK/targets.json" || return 1
    python3 - "$WORK/targets.json" >"$WORK/targets.last" <<'PY'
import collections, json, sys
targets = json.load(open(sys.argv[1]))["data"]["activeTargets"]
up = collections.Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
down = [f"{t['labels']['job']}@{t['labels'].get('instance')}:{t['health']}" for t in targets if t["health"] != "up"]
print(f"up: {dict(up)}; not up: {down or 'none'}")
sys.exit(0 if up["product-updater"] == 1 and up["producer"] == 1 and up["consumer"] == 5 and not down else 1)
PY
}
if wait_until "$HEALTHY_TIMEOUT" "prometheus to be healthy" containers_ok - prometheus \
    && wait_until 90 "Prometheus to scrape every service" targets_ok; then
    pass "Prometheus' targets: $(cat "$WORK/targets.last")"
else
    fail "Prometheus: $(cat "$WORK/ps.last" 2>/dev/null); $(cat "$WORK/targets.last" 2>/dev/null)"
fi
timing "prometheus up to every target up" "$started"

# --- 7. down and up, volumes kept ------------------------------------------------------------------
# project_volumes: the volumes mounted in the project's containers (named and anonymous).
project_volumes() {
    local id
    for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
        docker inspect --format '{{range .Mounts}}{{if .Name}}{{.Name}}{{"\n"}}{{end}}{{end}}' "$id"
    done | grep -v '^$' | sort -u
}
# left_over VOLUME...: what of the project is still there: containers, networks, and which of
# the VOLUMEs.
left_over() {
    local volume
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | sed 's/^/container /'
    docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | sed 's/^/network /'
    for volume in "$@"; do
        docker volume inspect "$volume" >/dev/null 2>&1 && echo "volume $volume"
    done
    return 0
}
info "==> docker compose down; docker compose up -d (the volumes stay)"
started=$SECONDS
mapfile -t volumes_before < <(project_volumes)
dc --profile observability down >"$WORK/down-keep.out" 2>&1 || fail "down: $(tail -n 5 "$WORK/down-keep.out" | tr '\n' ' ')"
kept=()
for volume in "${volumes_before[@]}"; do
    if [[ "$volume" == "${PROJECT}_"* ]]; then
        kept+=("$volume")
    else
        # Anonymous volumes of removed containers stay behind after a plain `down` (Docker's way);
        # they are this run's, so they go now.
        docker volume rm "$volume" >/dev/null 2>&1 || true
    fi
done
if [[ " ${kept[*]} " == *" ${PROJECT}_kafka-data "* && " ${kept[*]} " == *" ${PROJECT}_mysql-data "* ]] \
    && docker volume inspect "${PROJECT}_kafka-data" "${PROJECT}_mysql-data" >/dev/null 2>&1; then
    pass "down kept the named volumes: ${kept[*]}"
else
    fail "the broker's and the database's named volumes are not there after down: mounted were ${volumes_before[*]}"
fi
dc up -d >"$WORK/up-again.out" 2>&1 || fail "up -d after down: $(tail -n 5 "$WORK/up-again.out" | tr '\n' ' ')"
if wait_until "$HEALTHY_TIMEOUT" "every container healthy after down and up" containers_ok 5; then
    pass "every container healthy after down and up"
else
    fail "after down and up: $(cat "$WORK/ps.last")"
fi
sleep 5 # changes made after it is back
quiesce_and_check "down and up with the volumes kept" "$RUN_SINCE"
timing "down and up (volumes kept) to consistent" "$started"

# --- 8. down -v ------------------------------------------------------------------------------------
# save_logs NAME: the containers' logs, kept in $WORK/NAME when a check failed.
save_logs() {
    ((FAILED == 0)) || dc --profile observability logs --no-color --timestamps >"$WORK/$1" 2>&1 || true
}
info "==> docker compose down -v"
started=$SECONDS
save_logs compose-first-up.log
mapfile -t volumes < <(project_volumes)
dc --profile observability down -v >"$WORK/down.out" 2>&1 || fail "down -v: $(tail -n 5 "$WORK/down.out" | tr '\n' ' ')"
left="$(left_over "${volumes[@]}")"
if [[ -z "$left" ]]; then
    pass "down -v left nothing (${#volumes[@]} volumes removed: ${volumes[*]})"
else
    fail "down -v left: $(tr '\n' ' ' <<<"$left")"
fi
timing "down -v" "$started"

# --- 9. up again in the same folder ---------------------------------------------------------------
info "==> docker compose up -d (again, same folder)"
SECOND_SINCE="$(date -u +%Y-%m-%dT%H:%M:%S)"
started=$SECONDS
dc up -d >"$WORK/up2.out" 2>&1 || fail "second up -d: $(tail -n 5 "$WORK/up2.out" | tr '\n' ' ')"
if wait_until "$HEALTHY_TIMEOUT" "every container healthy (second up)" containers_ok 5; then
    pass "second up: every container healthy"
else
    fail "second up: $(cat "$WORK/ps.last")"
fi
if wait_until "$CONVERGE_TIMEOUT" "the new database's seeded products in the logs" logs_ok "$SECOND_SINCE"; then
    pass "second up in the same folder: $(cat "$WORK/logs.last")"
else
    fail "second up in the same folder: the logs did not get the new topic's records ($(cat "$WORK/logs.last" 2>/dev/null)); checkpoints: $(cat "$DIR"/consumer_logs/consumer_*/consumer_log.checkpoint.json 2>/dev/null | tr '\n' ' ')"
fi
timing "second up to all seeded products in the logs" "$started"
started=$SECONDS
save_logs compose-second-up.log
mapfile -t volumes < <(project_volumes)
dc --profile observability down -v >"$WORK/down2.out" 2>&1 || fail "second down -v: $(tail -n 5 "$WORK/down2.out" | tr '\n' ' ')"
left="$(left_over "${volumes[@]}")"
[[ -z "$left" ]] || fail "second down -v left: $(tr '\n' ' ' <<<"$left")"
timing "down -v (second)" "$started"

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
