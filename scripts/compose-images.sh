#!/usr/bin/env bash
# Builds, without any container registry, every image docker-compose.yml needs, for the compose
# end-to-end test (scripts/compose-e2e.sh) and for `docker compose up` on a machine that cannot
# pull (docker-compose.test.yml runs them in place of the real images):
#
#   scripts/compose-images.sh
#
#   productstream-test/base:bookworm      Debian bookworm (minbase + ca-certificates, libssl3),
#                                         made from Debian's packages with mmdebstrap and the
#                                         machine's own apt sources, then `docker import`ed
#   productstream-test/tools:bookworm     the same + curl, jq (the stand-ins' scripts, health checks)
#   productstream:local                   docker/Dockerfile's runtime stage on the base, with this
#                                         machine's release binaries (scripts/runtime-image.py)
#   productstream-test/mysql:local        MariaDB from Debian, entrypoint like the mysql image's
#   productstream-test/kafka:local        tansu, with Kafka's tools where the compose file calls them
#   productstream-test/schema-registry:local   tools/dev-schema-registry
#   productstream-test/prometheus:local   Debian's prometheus
#
# The stand-ins are described in docker/test-images/. Root filesystems are cached in
# .testbed/images/ (git-ignored) under a key of what goes into them (packages, hooks, apt
# sources), and each imported image carries that key: when nothing changed, a run only checks the
# keys, lets cargo and the Docker build cache confirm the rest, and takes seconds. Delete
# .testbed/images/ to take newer Debian packages.
#
# Needs a Docker engine, root (or sudo) to install mmdebstrap from Debian if missing, cargo, and
# tansu (scripts/install-tansu.sh). Prints how long each part took.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

SUITE=bookworm
CACHE_DIR="$TESTBED_DIR/images"
KEY_LABEL=org.productstream.rootfs-key
TEST_LABEL=org.productstream.test-image
# Bump to rebuild every root filesystem after changing how they are made.
RECIPE_VERSION=1

BASE_IMAGE="productstream-test/base:$SUITE"
TOOLS_IMAGE="productstream-test/tools:$SUITE"
APP_IMAGE="productstream:local"
MYSQL_IMAGE="productstream-test/mysql:local"
KAFKA_IMAGE="productstream-test/kafka:local"
REGISTRY_IMAGE="productstream-test/schema-registry:local"
PROMETHEUS_IMAGE="productstream-test/prometheus:local"

# timed NAME COMMAND...: runs COMMAND and says how long it took.
timed() {
    local name="$1" started=$SECONDS rc=0
    shift
    "$@" || rc=$?
    info "$name: $(fmt_duration $((SECONDS - started)))"
    return "$rc"
}

# The machine's apt sources for Debian (files naming a .../debian or .../debian-security archive).
debian_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        grep -Eq '^[^#]*https?://[^[:space:]]+/debian(-security)?/?([[:space:]]|$)' "$f" && echo "$f"
    done
    return 0
}

# Documentation and translations are left out of every root filesystem (copyright files kept).
DPKG_OPTS=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
)

# rootfs IMAGE PACKAGES [HOOK...]: a minbase root filesystem of $SUITE plus PACKAGES (comma
# separated), with mmdebstrap customize HOOKs, imported as IMAGE unless IMAGE already has the key.
rootfs() {
    local image="$1" packages="$2"
    shift 2
    local hooks=() hook
    for hook in "$@"; do
        hooks+=(--customize-hook="$hook")
    done
    local key
    key="$(
        {
            printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$packages" "$@" "${DPKG_OPTS[@]}"
            cat "${SOURCES[@]}"
        } | sha256sum | cut -c1-16
    )"
    local have
    have="$(docker image inspect --format "{{index .Config.Labels \"$KEY_LABEL\"}}" "$image" 2>/dev/null || true)"
    if [[ "$have" == "$key" ]]; then
        info "$image: up to date (root filesystem $key)"
        return 0
    fi
    local name="${image#productstream-test/}"
    name="${name%%:*}"
    local tar="$CACHE_DIR/rootfs-$name-$key.tar"
    if [[ ! -s "$tar" ]]; then
        info "$image: making the root filesystem with mmdebstrap ($SUITE, minbase + $packages)"
        rm -f "$CACHE_DIR/rootfs-$name-"*.tar
        mmdebstrap --variant=minbase --format=tar --include="$packages" "${DPKG_OPTS[@]}" \
            "${hooks[@]}" "$SUITE" "$tar.partial" "${SOURCES[@]}" >"$CACHE_DIR/mmdebstrap-$name.log" 2>&1 || {
            tail -n 30 "$CACHE_DIR/mmdebstrap-$name.log" >&2
            die "mmdebstrap failed for $image (log: $CACHE_DIR/mmdebstrap-$name.log)"
        }
        mv "$tar.partial" "$tar"
    fi
    info "$image: docker import $tar"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $KEY_LABEL=$key $TEST_LABEL=1" \
        "$tar" "$image" >/dev/null
}

# build IMAGE CONTEXT [docker build args...]: the classic builder (the engine may have no BuildKit
# client here), quiet unless it fails.
build() {
    local image="$1" context="$2"
    shift 2
    local log="$CACHE_DIR/build-${image//[\/:]/_}.log"
    if ! DOCKER_BUILDKIT=0 docker build --label "$TEST_LABEL=1" -t "$image" "$@" "$context" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "docker build of $image failed (log: $log)"
    fi
    info "$image: built ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

# context NAME: a fresh build context for docker/test-images/NAME, printed.
context() {
    local dir="$CACHE_DIR/context/$1"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -a "docker/test-images/$1/." "$dir/"
    echo "$dir"
}

docker info >/dev/null 2>&1 || die "no Docker engine answers ('docker info' failed)"
command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
mkdir -p "$CACHE_DIR"
mapfile -t SOURCES < <(debian_sources)
((${#SOURCES[@]})) || die "no Debian apt sources found in /etc/apt/sources.list(.d): mmdebstrap needs them"
TANSU_BIN="$(find_tansu)" || die "tansu is not installed; run scripts/install-tansu.sh"
started=$SECONDS

# The root filesystems (downloads and dpkg) are made in the background while cargo builds.
root_filesystems() {
    rootfs "$BASE_IMAGE" ca-certificates,libssl3
    rootfs "$TOOLS_IMAGE" ca-certificates,libssl3,curl,jq
    # The package creates a data directory; the entrypoint must find it empty to initialise it.
    # shellcheck disable=SC2016 # "$1" is for mmdebstrap's hook shell (the root filesystem's path)
    rootfs "productstream-test/mysql-rootfs:$SUITE" mariadb-server,mariadb-client \
        'rm -rf "$1"/var/lib/mysql/* "$1"/etc/mysql/debian.cnf'
    rootfs "productstream-test/prometheus-rootfs:$SUITE" prometheus,wget
}
rootfs_started=$SECONDS
root_filesystems >"$CACHE_DIR/root-filesystems.log" 2>&1 &
rootfs_pid=$!

# Our binaries: what docker/Dockerfile's builder builds, plus the registry stand-in.
mapfile -t PACKAGES < <(python3 scripts/runtime-image.py packages docker/Dockerfile)
cargo_args=()
for p in "${PACKAGES[@]}" dev-schema-registry; do
    cargo_args+=(-p "$p")
done
if ! timed "cargo build --release ${cargo_args[*]}" cargo build --release --quiet "${cargo_args[@]}"; then
    wait "$rootfs_pid" || true # no orphaned mmdebstrap
    die "cargo build --release failed"
fi
rootfs_rc=0
wait "$rootfs_pid" || rootfs_rc=$?
cat "$CACHE_DIR/root-filesystems.log" >&2
((rootfs_rc == 0)) || die "making the root filesystems failed (log above: $CACHE_DIR/root-filesystems.log)"
info "root filesystems: $(fmt_duration $((SECONDS - rootfs_started)))"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

images_started=$SECONDS
app_context="$CACHE_DIR/context/productstream"
rm -rf "$app_context"
python3 scripts/runtime-image.py stage docker/Dockerfile "$REPO_ROOT" "$TARGET_DIR/release" \
    "$BASE_IMAGE" "$app_context"
build "$APP_IMAGE" "$app_context"

build "$MYSQL_IMAGE" "$(context mysql)" --build-arg "BASE=productstream-test/mysql-rootfs:$SUITE"
dir="$(context kafka)"
cp "$TANSU_BIN" "$dir/tansu"
build "$KAFKA_IMAGE" "$dir" --build-arg "BASE=$TOOLS_IMAGE"
dir="$(context schema-registry)"
strip --strip-all -o "$dir/dev-schema-registry" "$TARGET_DIR/release/dev-schema-registry" 2>/dev/null \
    || cp "$TARGET_DIR/release/dev-schema-registry" "$dir/"
build "$REGISTRY_IMAGE" "$dir" --build-arg "BASE=$TOOLS_IMAGE"
build "$PROMETHEUS_IMAGE" "$(context prometheus)" --build-arg "BASE=productstream-test/prometheus-rootfs:$SUITE"
info "images: $(fmt_duration $((SECONDS - images_started)))"

# Images these builds replaced (their tags moved) are dangling now.
docker image prune --force --filter "label=$TEST_LABEL=1" >/dev/null || true
info "compose images ready in $(fmt_duration $((SECONDS - started))): $APP_IMAGE $MYSQL_IMAGE $KAFKA_IMAGE $REGISTRY_IMAGE $PROMETHEUS_IMAGE"
