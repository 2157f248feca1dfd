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
tap_total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$WORKDIR/check.log" | tail -1)
tap_failed=$(grep -cE '^not ok ' "$WORKDIR/check.log" || true)
passed=$((passed + ${tap_total:-0} - tap_failed))
failed=$((failed + tap_failed))
echo "tests: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
