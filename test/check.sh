#!/usr/bin/env bash
# Runs every outbox test: pg_regress, isolation specs and TAP tests, each
# against temporary clusters started as the postgres OS user.
#   sudo test/check.sh
# Installs missing Debian packages, builds with -Werror and installs first.
source "$(dirname "$0")/lib/common.sh"

ensure_packages
make_workdir
trap 'rm -rf "$WORKDIR"' EXIT
OUTBOX_WERROR=1 build_and_install

status=0
log "running pg_regress, isolation and TAP tests"
as_pg make -C "$WORKDIR" installcheck 2>&1 | tee "$WORKDIR/check.log" || status=$?
if [ "$status" -ne 0 ]; then
    for f in "$WORKDIR"/regression.diffs "$WORKDIR"/output_iso/regression.diffs; do
        [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
    done
    for f in "$WORKDIR"/tmp_check/log/*; do
        [ -f "$f" ] && { echo "---- $f"; tail -n 80 "$f"; }
    done
fi

# One closing line over all three suites.
passed=$(grep -cE '^(ok|test) .* ok( |$)|^ok [0-9]+ ' "$WORKDIR/check.log" || true)
failed=$(grep -cE ' FAILED|^not ok ' "$WORKDIR/check.log" || true)
tap=$(grep -E '^Files=.*Tests=' "$WORKDIR/check.log" || true)
echo "${tap:+$tap}"
echo "tests: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
