#!/usr/bin/env bash
# release_tree.sh VERSION DEST: extracts the source of outbox VERSION, the
# newest commit of this repository whose outbox.control has
# default_version = 'VERSION', into DEST (for the in-place upgrade test).
# Exits 1 without a repository or without such a commit.
set -euo pipefail
version=$1 dest=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || { echo "not a git checkout: $root" >&2; exit 1; }
for commit in $(git -C "$root" rev-list --first-parent HEAD); do
    if git -C "$root" show "$commit:outbox.control" | grep -qx "default_version = '$version'"; then
        mkdir -p "$dest"
        git -C "$root" archive "$commit" | tar xf - -C "$dest"
        echo "$commit"
        exit 0
    fi
done
echo "no commit has outbox.control at $version" >&2
exit 1
