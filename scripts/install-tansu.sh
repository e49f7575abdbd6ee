#!/usr/bin/env bash
# Installs the tansu Kafka-compatible broker (used as the Kafka of tests and of the native run)
# with cargo, unless it is already installed. The build takes about 30 minutes on 2 cores.
#
#   scripts/install-tansu.sh
#
# If another `cargo install tansu` is already running on this machine, waits for it instead of
# starting a second one.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if tansu_path="$(find_tansu)"; then
    info "tansu is already installed: $tansu_path ($("$tansu_path" --version 2>/dev/null | head -n1 || echo 'version unknown'))"
    exit 0
fi

other_install_running() {
    pgrep -f "cargo install tansu" >/dev/null 2>&1
}

if other_install_running; then
    info "another 'cargo install tansu' is running; waiting for it (up to 60 minutes)"
    deadline=$((SECONDS + 3600))
    while other_install_running; do
        ((SECONDS < deadline)) || die "the other tansu install is still running after 60 minutes"
        sleep 15
    done
    if tansu_path="$(find_tansu)"; then
        info "tansu is now installed: $tansu_path"
        exit 0
    fi
    warn "the other install finished without installing tansu; installing it here"
fi

command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH; install Rust (rustup) first"

info "installing tansu $TANSU_VERSION with cargo (about 30 minutes on 2 cores)"
started=$SECONDS
cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features --features dynostore,libsql \
    || die "cargo install tansu failed"
tansu_path="$(find_tansu)" || die "cargo install finished but no tansu binary was found on PATH or in ~/.cargo/bin"
info "installed $tansu_path in $(fmt_duration $((SECONDS - started)))"
