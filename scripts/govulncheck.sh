#!/usr/bin/env bash
# govulncheck against the Go vulnerability database, built locally from
# golang.org/x/vulndb as the Go module proxy serves it: vuln.go.dev is not
# reachable from CI, the module proxy is. The database (its OSV reports
# indexed by vulndb's own indexdb command) is built once per vulndb version
# into the user's cache directory, about 40 MB and 40 s the first time.
#
# VULNDB_VERSION pins a vulndb version (a pseudo-version); the default is
# the newest the proxy serves, so a new report fails the check the day it
# is published.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version="${VULNDB_VERSION:-latest}"
# Outside the module, so that go.mod and go.sum stay as they are.
info=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "golang.org/x/vulndb@$version")
field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" <<<"$info"; }
version=$(field Version)
dir=$(field Dir)
if [ -z "$version" ] || [ ! -d "$dir/data/osv" ]; then
  echo "govulncheck: no vulnerability reports in golang.org/x/vulndb@${VULNDB_VERSION:-latest}:" >&2
  echo "$info" >&2
  exit 1
fi
db="${XDG_CACHE_HOME:-$HOME/.cache}/tessera/vulndb/$version"
if [ ! -f "$db/index/db.json" ]; then
  echo "govulncheck: indexing golang.org/x/vulndb@$version into $db" >&2
  tmp=$(mktemp -d "${db%/*}.XXXXXX" 2>/dev/null || { mkdir -p "${db%/*}" && mktemp -d "${db%/*}/.tmp.XXXXXX"; })
  (cd "${TMPDIR:-/tmp}" && go run "golang.org/x/vulndb/cmd/indexdb@$version" -vulns "$dir/data/osv" -out "$tmp")
  rm -rf "$db"
  mv "$tmp" "$db"
fi
cd "$root"
exec go tool govulncheck -db "file://$db" ./...
