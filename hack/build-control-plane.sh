#!/usr/bin/env bash
# Builds a Kubernetes control plane from Go modules for the tests:
#   kube-apiserver kube-controller-manager kube-scheduler kubectl  (k8s.io/kubernetes, hack/k8s/go.mod)
#   etcd   (go.etcd.io/etcd/server/v3/etcdmain, the version k8s pins; hack/k8s/etcd)
#   helm   (go install helm.sh/helm/v4/cmd/helm@HELM_VERSION)
# into ${MODELGRID_CACHE:-$HOME/.cache/modelgrid}/k8s/<k8s>-etcd<v>-helm<v>/bin.
#
# A warm cache (six binaries + matching stamp) skips the build. Progress goes to
# stderr; the LAST line of stdout is the absolute bin directory:
#   BIN=$(hack/build-control-plane.sh | tail -n1)
# Pass --force to rebuild even when the cache is warm.
set -euo pipefail

HELM_VERSION=v4.3.1 # helm.sh/helm/v4; it uses k8s.io/client-go v0.37.1 like the pinned k8s
BUILD_REV=1         # bump when the build recipe below changes, to invalidate caches

export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0 # upstream builds these statically, too

log() { echo "build-control-plane: $*" >&2; }

force=0
[[ "${1:-}" == "--force" ]] && force=1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$repo/hack/k8s"

# Versions come from hack/k8s/go.mod (written by hack/k8s/gen-replaces.sh).
# One awk, no pipe: an awk that exits at its first match would SIGPIPE the writer before it,
# and under pipefail that made the whole script exit 141 with nothing on stdout.
modver() { awk -v m="$1" '{ sub(/^require[[:space:]]+/, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod"; }
K8S_VERSION="$(modver k8s.io/kubernetes)"
ETCD_VERSION="$(modver go.etcd.io/etcd/server/v3)"
[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || { log "no k8s.io/kubernetes version in $mod/go.mod"; exit 1; }
K8S_MINOR="${BASH_REMATCH[1]}"
[[ -n "$ETCD_VERSION" ]] || { log "no go.etcd.io/etcd/server/v3 version in $mod/go.mod"; exit 1; }
HELM_MODULE="helm.sh/helm/${HELM_VERSION%%.*}"

cache_root="${MODELGRID_CACHE:-$HOME/.cache/modelgrid}"
out="$cache_root/k8s/${K8S_VERSION}-etcd${ETCD_VERSION#v}-helm${HELM_VERSION#v}"
bin="$out/bin"
stamp="$out/stamp"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)

fingerprint() {
  echo "rev=$BUILD_REV k8s=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION"
  cat "$mod/go.mod" "$mod/go.sum" "$mod/etcd/main.go" | sha256sum | cut -d' ' -f1
}

warm() {
  [[ "$force" == 0 && -f "$stamp" ]] || return 1
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
  # first two lines: the fingerprint; the rest is informational
  [[ "$(head -n2 "$stamp")" == "$(fingerprint)" ]]
}

if warm; then
  log "cache warm: $bin"
  echo "$bin"
  exit 0
fi

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
log "building k8s $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION with $(go env GOVERSION) into $bin"
tmp="$out/bin.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"

k8s_pkgs=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubectl
)

# 1. module downloads (only what these packages need), timed separately.
t0=$(date +%s)
(cd "$mod" && go list -deps "${k8s_pkgs[@]}" ./etcd >/dev/null)
# -n: load (and download) helm's module graph and packages without compiling.
if ! (cd "$out" && GOFLAGS=-buildvcs=false go install -n "$HELM_MODULE/cmd/helm@$HELM_VERSION" >"$out/helm-n.log" 2>&1); then
  grep -v -e '^#' -e '^mkdir' -e '^cat' -e '^EOF' "$out/helm-n.log" | tail -n 20 >&2
  exit 1
fi
rm -f "$out/helm-n.log"
t1=$(date +%s)
log "modules downloaded in $((t1 - t0))s"

# buildDate = the release's tag time from the module proxy, so builds are reproducible.
build_date="$(cd "$mod" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
[[ -n "$build_date" ]] || build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
done

# 2. the four k8s binaries and etcd in one invocation: they share compilation.
(cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${k8s_pkgs[@]}" ./etcd)
t2=$(date +%s)
log "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd built in $((t2 - t1))s"

# 3. helm, with its own module graph (go install pkg@version ignores hack/k8s/go.mod).
helm_ldflags="-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/internal/version.gitTreeState=clean"
(cd "$out" && GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -ldflags "$helm_ldflags" "$HELM_MODULE/cmd/helm@$HELM_VERSION")
t3=$(date +%s)
log "helm built in $((t3 - t2))s"

for b in "${binaries[@]}"; do
  [[ -x "$tmp/$b" ]] || { log "missing $tmp/$b after build"; exit 1; }
done
rm -rf "$bin"
mv "$tmp" "$bin"
{
  fingerprint
  echo "go=$(go env GOVERSION) built=$(date -u +%Y-%m-%dT%H:%M:%SZ) seconds=$((t3 - start)) download=$((t1 - t0)) k8s+etcd=$((t2 - t1)) helm=$((t3 - t2))"
} >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
log "done in $((t3 - start))s (download $((t1 - t0))s, k8s+etcd compile $((t2 - t1))s, helm $((t3 - t2))s)"
echo "$bin"
