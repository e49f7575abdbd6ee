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

# A prebuilt copy (built with exactly the `cargo install` flags below) saves the build where the
# workplace's shared tools are present and their checksums match; anything else builds from crates.io.
install_prebuilt() {
    local dir="$REPO_ROOT/../shared/tools" archive sums dest tmp
    archive="$dir/tansu-$TANSU_VERSION-x86_64-linux.gz"
    sums="$archive.sha256"
    [[ -f "$archive" && -f "$sums" && "$(uname -m)" == x86_64 ]] || return 1
    command -v sha256sum >/dev/null 2>&1 || return 1
    local want_gz want_bin
    want_gz="$(awk '$2 ~ /[.]gz$/ {print $1}' "$sums")"
    want_bin="$(awk '$2 == "tansu" {print $1}' "$sums")"
    [[ -n "$want_gz" && -n "$want_bin" ]] || return 1
    if [[ "$(sha256sum "$archive" | cut -d' ' -f1)" != "$want_gz" ]]; then
        warn "prebuilt tansu at $archive does not match its checksum; building instead"
        return 1
    fi
    dest="${CARGO_HOME:-$HOME/.cargo}/bin"
    mkdir -p "$dest"
    tmp="$(mktemp "$dest/.tansu.XXXXXX")"
    gzip -dc "$archive" >"$tmp" || { rm -f "$tmp"; return 1; }
    if [[ "$(sha256sum "$tmp" | cut -d' ' -f1)" != "$want_bin" ]]; then
        rm -f "$tmp"
        warn "prebuilt tansu unpacked to a binary that does not match its checksum; building instead"
        return 1
    fi
    chmod 755 "$tmp"
    if ! "$tmp" --version >/dev/null 2>&1; then
        rm -f "$tmp"
        warn "prebuilt tansu does not run on this machine; building instead"
        return 1
    fi
    mv -f "$tmp" "$dest/tansu"
    info "installed the prebuilt tansu $TANSU_VERSION from $archive (checksums match)"
}

if install_prebuilt; then
    exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH; install Rust (rustup) first"

info "installing tansu $TANSU_VERSION with cargo (about 30 minutes on 2 cores)"
started=$SECONDS
cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features --features dynostore,libsql \
    || die "cargo install tansu failed"
tansu_path="$(find_tansu)" || die "cargo install finished but no tansu binary was found on PATH or in ~/.cargo/bin"
info "installed $tansu_path in $(fmt_duration $((SECONDS - started)))"
