#!/usr/bin/env bash
# Builds the Debian package postgresql-15-outbox_<version>-1_amd64.deb from
# this checkout, the Debian PostgreSQL way (pg_buildext, debian/pgversions),
# and checks it with lintian.
#   sudo test/package/build.sh [OUTDIR]        (default: ./build-deb)
# Installs its build dependencies itself; prints the .deb's path last.
source "$(dirname "$0")/../lib/common.sh"

OUTDIR=$(realpath -m "${1:-$OUTBOX_ROOT/build-deb}")
ensure_packages debhelper dpkg-dev fakeroot postgresql-server-dev-all libcurl4-openssl-dev librdkafka-dev lintian

version=$(sed -n '1s/^outbox (\([^)]*\)).*/\1/p' "$OUTBOX_ROOT/debian/changelog")
upstream=${version%-*}
extversion=$(sed -n 's/^EXTVERSION *= *//p' "$OUTBOX_ROOT/Makefile")
[ "$upstream" = "$extversion" ] || {
    echo "debian/changelog says $upstream, the Makefile $extversion" >&2
    exit 1
}

# Build from the tracked files only (as git archive would), in a scratch tree.
BUILD=$(mktemp -d /tmp/outbox-deb.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT
src="$BUILD/outbox-$upstream"
mkdir -p "$src"
if git -C "$OUTBOX_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$OUTBOX_ROOT" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 tar cf - --no-recursion) | tar xf - -C "$src"
else
    (cd "$OUTBOX_ROOT" && tar cf - --exclude=./build-deb .) | tar xf - -C "$src"
fi

log "building the package (dpkg-buildpackage)"
(cd "$src" && dpkg-checkbuilddeps && dpkg-buildpackage -us -uc -b) > "$BUILD/build.log" 2>&1 || {
    tail -n 60 "$BUILD/build.log" >&2
    exit 1
}
deb=$(ls "$BUILD"/postgresql-15-outbox_"${version}"_*.deb)
mkdir -p "$OUTDIR"
cp "$deb" "$OUTDIR/"
deb="$OUTDIR/$(basename "$deb")"

log "lintian $(basename "$deb")"
lintian --no-tag-display-limit "$deb" | tee "$BUILD/lintian.log" >&2 || true
if grep -q '^E: ' "$BUILD/lintian.log"; then
    echo "lintian reports errors" >&2
    exit 1
fi
echo "$deb"
