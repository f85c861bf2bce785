#!/usr/bin/env bash
# Builds hack/kstatus (a tiny command around sigs.k8s.io/cli-utils/pkg/kstatus/status, the
# library Flux and kpt use to tell whether an object is Current, InProgress or Failed) into
#   ${MODELGRID_CACHE:-$HOME/.cache/modelgrid}/kstatus-<cli-utils version>/kstatus
# for tests/kstatus.py.
#
# A warm cache (the binary + a matching stamp) skips the build. Progress goes to stderr; the
# LAST line of stdout is the absolute path of the binary:
#   KSTATUS=$(hack/build-kstatus.sh | tail -n1)
# Pass --force to rebuild even when the cache is warm. Go environment as in
# hack/build-control-plane.sh: GOTOOLCHAIN=local, modules from the configured GOPROXY.
set -euo pipefail

BUILD_REV=1 # bump when the build recipe below changes, to invalidate caches

export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

log() { echo "build-kstatus: $*" >&2; }

force=0
[[ "${1:-}" == "--force" ]] && force=1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$repo/hack/kstatus"

# One awk, no pipe (see hack/build-control-plane.sh: an early-exiting reader SIGPIPEs the writer).
modver() { awk -v m="$1" '{ sub(/^require[[:space:]]+/, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod"; }
CLI_UTILS_VERSION="$(modver sigs.k8s.io/cli-utils)"
[[ -n "$CLI_UTILS_VERSION" ]] || { log "no sigs.k8s.io/cli-utils version in $mod/go.mod"; exit 1; }

cache_root="${MODELGRID_CACHE:-$HOME/.cache/modelgrid}"
out="$cache_root/kstatus-$CLI_UTILS_VERSION"
bin="$out/kstatus"
stamp="$out/stamp"

fingerprint() {
  echo "rev=$BUILD_REV cli-utils=$CLI_UTILS_VERSION"
  cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" | sha256sum | cut -d' ' -f1
}

warm() {
  [[ "$force" == 0 && -f "$stamp" && -x "$bin" ]] || return 1
  # first two lines: the fingerprint; the rest is informational
  [[ "$(head -n2 "$stamp")" == "$(fingerprint)" ]]
}

if warm; then
  log "cache warm: $bin"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { log "no go command on PATH"; exit 1; }
mkdir -p "$out"
# Serialize concurrent builders (e.g. parallel test workers) on the same key.
if command -v flock >/dev/null; then
  exec 9>"$out/.lock"
  flock 9
  if warm; then
    log "cache warm (built by another process): $bin"
    echo "$bin"
    exit 0
  fi
fi

start=$(date +%s)
log "building kstatus (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION) with $(go env GOVERSION) into $bin"
tmp="$out/kstatus.tmp"
rm -f "$tmp"
(cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$tmp" .)
[[ -x "$tmp" ]] || { log "missing $tmp after build"; exit 1; }
mv -f "$tmp" "$bin"
end=$(date +%s)
{
  fingerprint
  echo "go=$(go env GOVERSION) built=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$((end - start))"
} >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
log "done in $((end - start))s"
echo "$bin"
