#!/usr/bin/env bash
# Runs every outbox test: pg_regress, isolation specs and TAP tests, each
# against temporary clusters started as the postgres OS user, then the Debian
# package test.
#   sudo test/check.sh
# Installs missing Debian packages, builds with -Werror and installs first.
source "$(dirname "$0")/lib/common.sh"

ensure_packages
make_workdir
trap 'rm -rf "$WORKDIR"' EXIT
OUTBOX_WERROR=1 build_and_install
# The 0.1.0 release, from the repository's history, for the in-place upgrade
# test (test/t/009_inplace_upgrade.pl skips, saying why, without it).
if bash "$OUTBOX_ROOT/test/lib/release_tree.sh" 0.1.0 "$WORKDIR/test/release-0.1.0" >/dev/null; then
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$WORKDIR/test/release-0.1.0"
fi

# The three suites run one after another even if one fails, so that a red
# run shows every failure at once.
status=0
: > "$WORKDIR/check.log"
for suite in regress isolation tap; do
    case $suite in
        regress)   vars=(ISOLATION= TAP_TESTS=) ;;
        isolation) vars=(REGRESS= TAP_TESTS=) ;;
        tap)       vars=(REGRESS= ISOLATION=) ;;
    esac
    log "running the $suite tests"
    as_pg make -C "$WORKDIR" -s installcheck "${vars[@]}" 2>&1 | tee -a "$WORKDIR/check.log" ||
        status=1
done
# Packaging (test/package/): META.json against the PGXN spec and `make dist`;
# the Debian package built, installed with apt-get, used by a cluster made
# with pg_createcluster and removed, where the machine can (root and dpkg).
packaging=(test/package/002_meta.pl)
if [ "$(id -u)" -eq 0 ] && command -v dpkg-deb >/dev/null; then
    packaging+=(test/package/001_deb.pl)
else
    log "skipping the Debian package test: it needs root and dpkg (apt-get, pg_createcluster)"
fi
log "running the packaging tests"
(cd "$WORKDIR" && OUTBOX_SOURCE="$OUTBOX_ROOT" prove -I test/t "${packaging[@]}") 2>&1 |
    tee -a "$WORKDIR/check.log" || status=1
# Removing the package took the files `make install` had put there.
make -C "$WORKDIR" -s install

if [ "$status" -ne 0 ]; then
    for f in "$WORKDIR"/regression.diffs "$WORKDIR"/output_iso/regression.diffs; do
        [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
    done
    for f in "$WORKDIR"/tmp_check/log/*; do
        [ -f "$f" ] && { echo "---- $f"; tail -n 80 "$f"; }
    done
fi

# One closing line over the three suites: pg_regress and isolation tests,
# plus TAP assertions.
passed=$(grep -cE '^(test|ok) .*\.\.\. ok ' "$WORKDIR/check.log" || true)
failed=$(grep -cE '^(test|not ok) .*\.\.\. FAILED' "$WORKDIR/check.log" || true)
tap_total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$WORKDIR/check.log" |
    awk '{ n += $1 } END { print n + 0 }')
# prove's summary names each failing file: "(Wstat: ... Tests: N Failed: M)"
tap_failed=$(sed -n 's/.*(Wstat: .* Failed: \([0-9]*\)).*/\1/p' "$WORKDIR/check.log" |
    awk '{ n += $1 } END { print n + 0 }')
passed=$((passed + ${tap_total:-0} - tap_failed))
failed=$((failed + tap_failed))
# a suite that failed without naming a test (a build or harness error) counts once
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "tests: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
