#!/usr/bin/env bash
# Runs staticcheck (go.mod's tool line) on the given packages and fails on
# every finding except those listed in scripts/staticcheck-known.txt: known
# findings in files being rewritten, written as staticcheck prints them
# without the line and column ("flows/keyed.go: field ks is unused (U1000)"),
# so that edits elsewhere in the file do not move them. A listed finding that
# is not found is reported, so its line can be deleted once fixed.
set -uo pipefail
cd "$(dirname "$0")/.."
known=scripts/staticcheck-known.txt
out=$(${GO:-go} tool staticcheck "$@")
rc=$?
if [ "$rc" -gt 1 ]; then
  printf '%s\n' "$out"
  exit "$rc"
fi
printf '%s\n' "$out" | awk -v known="$known" '
  BEGIN {
    while ((getline l < known) > 0) if (l != "" && l !~ /^#/) want[l] = 1
  }
  $0 == "" { next }
  {
    k = $0
    sub(/:[0-9]+:[0-9]+: /, ": ", k)
    if (k in want) { seen[k] = 1; next }
    print; bad = 1
  }
  END {
    for (k in want) if (!(k in seen)) print "not found (if fixed, delete its line from " known "): " k
    exit bad
  }'
