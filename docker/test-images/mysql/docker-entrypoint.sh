#!/bin/bash
# Entrypoint of the MySQL stand-in (MariaDB from Debian's packages; scripts/compose-images.sh):
# does for docker-compose.yml what the mysql image's entrypoint does.
#
# On the first start (empty /var/lib/mysql) it creates the data directory, then with a temporary
# server that listens on the socket only (so a health check over 127.0.0.1 fails until the end):
#   - root gets MYSQL_ROOT_PASSWORD (or none with MYSQL_ALLOW_EMPTY_PASSWORD, or a random one
#     with MYSQL_RANDOM_ROOT_PASSWORD, printed), for 'root'@'localhost' and 'root'@MYSQL_ROOT_HOST
#     (default '%');
#   - MYSQL_DATABASE is created, and MYSQL_USER with MYSQL_PASSWORD gets all rights on it;
#   - /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sql.xz, *.sql.zst run in MYSQL_DATABASE,
#     *.sh run (executable) or are sourced (not executable), in name order.
# Then the real server runs in the foreground as the mysql user, on all interfaces, port 3306.
# Later starts find the data directory initialised and skip all of that, like the real image.
# Arguments starting with '-' are passed to the server; any other command is run as it is.
set -euo pipefail

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

log() { printf '%s [Entrypoint]: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S+00:00')" "$*"; }
die() {
    log "ERROR: $*" >&2
    exit 1
}

# sql_string TEXT: TEXT as a single-quoted SQL literal.
sql_string() {
    local text="${1//\\/\\\\}"
    printf "'%s'" "${text//\'/\\\'}"
}

# sql_name NAME: NAME as a back-quoted identifier.
sql_name() {
    # shellcheck disable=SC2016 # literal back quotes
    printf '`%s`' "${1//\`/\`\`}"
}

if [[ "${1:-}" == -* ]]; then
    set -- mysqld "$@"
fi
if [[ "${1:-}" != mysqld && "${1:-}" != mariadbd ]]; then
    exec "$@"
fi
shift
server=(mariadbd --user=mysql --datadir="$DATADIR" --socket="$SOCKET")

[[ "$(id -u)" == 0 ]] || die "run me as root (I start the server as the mysql user)"
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
chown mysql:mysql "$DATADIR"

client() {
    mariadb --protocol=socket --socket="$SOCKET" -uroot "${root_password_arg[@]}" "$@"
}

initialise() {
    local root_password="" random_password="" db user password
    if [[ -n "${MYSQL_ROOT_PASSWORD:-}" ]]; then
        root_password="$MYSQL_ROOT_PASSWORD"
    elif [[ -n "${MYSQL_RANDOM_ROOT_PASSWORD:-}" ]]; then
        random_password="$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)"
        root_password="$random_password"
    elif [[ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]]; then
        die "Database is uninitialized and password option is not specified
    You need to specify one of the following as an environment variable:
    - MYSQL_ROOT_PASSWORD
    - MYSQL_ALLOW_EMPTY_PASSWORD
    - MYSQL_RANDOM_ROOT_PASSWORD"
    fi
    if [[ -n "${MYSQL_USER:-}" && -z "${MYSQL_PASSWORD:-}" ]]; then
        die "MYSQL_USER is set but MYSQL_PASSWORD is not"
    fi
    [[ "${MYSQL_USER:-}" != root ]] \
        || die "MYSQL_USER=\"root\", MYSQL_USER and MYSQL_PASSWORD are for configuring a regular user and cannot be used for the root user"

    log "Initializing database files"
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null \
        || die "mariadb-install-db failed"
    log "Database files initialized"

    log "Starting temporary server"
    "${server[@]}" --skip-networking "$@" &
    local pid=$!
    root_password_arg=()
    local i
    for ((i = 0; i < 60; i++)); do
        client -e 'SELECT 1' >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || die "the temporary server exited during initialisation"
        sleep 1
    done
    client -e 'SELECT 1' >/dev/null 2>&1 || die "the temporary server did not answer within 60s"
    log "Temporary server started."

    local root_host="${MYSQL_ROOT_HOST:-%}" sql="" account
    # mariadb-install-db also makes password-less root@127.0.0.1, root@::1, root@<hostname> and
    # anonymous accounts; the mysql image has only root@localhost and root@MYSQL_ROOT_HOST.
    while read -r account; do
        [[ -n "$account" ]] && sql+="DROP USER $account;"
    done < <(client -N -B -e "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user
        WHERE (User = 'root' AND Host <> 'localhost') OR User = ''")
    sql+="ALTER USER 'root'@'localhost' IDENTIFIED BY $(sql_string "$root_password");"
    if [[ "$root_host" != localhost ]]; then
        sql+="CREATE USER 'root'@$(sql_string "$root_host") IDENTIFIED BY $(sql_string "$root_password");"
        sql+="GRANT ALL ON *.* TO 'root'@$(sql_string "$root_host") WITH GRANT OPTION;"
    fi
    db="${MYSQL_DATABASE:-}"
    if [[ -n "$db" ]]; then
        log "Creating database $db"
        sql+="CREATE DATABASE IF NOT EXISTS $(sql_name "$db");"
    fi
    user="${MYSQL_USER:-}"
    password="${MYSQL_PASSWORD:-}"
    if [[ -n "$user" ]]; then
        log "Creating user $user"
        sql+="CREATE USER $(sql_string "$user")@'%' IDENTIFIED BY $(sql_string "$password");"
        if [[ -n "$db" ]]; then
            log "Giving user $user access to schema $db"
            sql+="GRANT ALL ON $(sql_name "$db").* TO $(sql_string "$user")@'%';"
        fi
    fi
    sql+="FLUSH PRIVILEGES;"
    client -e "$sql" || die "setting up users and the database failed"
    root_password_arg=()
    [[ -n "$root_password" ]] && root_password_arg=("-p$root_password")
    [[ -n "$random_password" ]] && log "GENERATED ROOT PASSWORD: $random_password"

    local db_arg=()
    [[ -n "$db" ]] && db_arg=("$db")
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [[ -e "$f" ]] || continue
        case "$f" in
        *.sh)
            if [[ -x "$f" ]]; then
                log "$0: running $f"
                "$f"
            else
                log "$0: sourcing $f"
                # shellcheck disable=SC1090 # the init scripts are the user's
                source "$f"
            fi
            ;;
        *.sql) log "$0: running $f" && client "${db_arg[@]}" <"$f" ;;
        *.sql.gz) log "$0: running $f" && gunzip -c "$f" | client "${db_arg[@]}" ;;
        *.sql.xz) log "$0: running $f" && xzcat "$f" | client "${db_arg[@]}" ;;
        *.sql.zst) log "$0: running $f" && zstd -dc "$f" | client "${db_arg[@]}" ;;
        *) log "$0: ignoring $f" ;;
        esac
    done

    log "Stopping temporary server"
    mariadb-admin --socket="$SOCKET" -uroot "${root_password_arg[@]}" shutdown \
        || die "could not stop the temporary server"
    wait "$pid" || true
    log "Temporary server stopped"
    log "MySQL init process done. Ready for start up."
}

if [[ ! -d "$DATADIR/mysql" ]]; then
    initialise "$@"
fi
exec "${server[@]}" --bind-address=0.0.0.0 --port=3306 --skip-name-resolve "$@"
