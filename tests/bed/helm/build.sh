#!/usr/bin/env bash
# Build (once, then cache) the `helm` command for the `chart` test tier, from the Go module proxy:
#   go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION}
# with the -X flags of Helm's own Makefile (version, and the Kubernetes version that
# `helm lint` and `helm template` assume as .Capabilities.KubeVersion).
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/helm/<hash>/bin/helm, where <hash> is a hash of
# this script (so any change to the recipe or the versions builds anew).
# The last line of stdout is that bin dir. Progress goes to stderr.
#
# A build is complete only when <hash>/.complete exists: it is written after `helm version`
# answered with the expected version, and the directory is moved into place with a rename,
# so an interrupted build is never reused.
set -euo pipefail

HELM_VERSION="v3.21.4"
# The Kubernetes version Helm reports as .Capabilities.KubeVersion for `helm template` and `helm lint`:
# the version of the test control plane (tests/bed/controlplane/build.sh).
KUBE_VERSION="v1.36.3"

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

log() { printf '[helm/build] %s\n' "$*" >&2; }
die() {
    printf '\n[helm/build] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v go >/dev/null 2>&1 || die "the 'go' command is not on PATH (need Go >= 1.24 to build helm ${HELM_VERSION})"
command -v flock >/dev/null 2>&1 || die "the 'flock' command (util-linux) is not on PATH"

HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/aidc/helm"
OUT="${ROOT}/${HASH}"
BIN="${OUT}/bin"
STAMP="${OUT}/.complete"

mkdir -p "${ROOT}"
if [[ -f "${STAMP}" ]]; then
    echo "${BIN}"
    exit 0
fi

exec 9>"${ROOT}/.lock"
log "waiting for the build lock ${ROOT}/.lock"
flock 9
if [[ -f "${STAMP}" ]]; then
    echo "${BIN}"
    exit 0
fi

log "building helm ${HELM_VERSION} (Kubernetes ${KUBE_VERSION}) into ${OUT}"
log "go: $(go version)"
STAGE="${ROOT}/${HASH}.partial"
rm -rf "${ROOT}"/*.partial
trap 'rm -rf "${STAGE}"' EXIT
rm -rf "${OUT}"
mkdir -p "${STAGE}/bin"

KUBE_MAJOR="$(echo "${KUBE_VERSION#v}" | cut -d. -f1)"
KUBE_MINOR="$(echo "${KUBE_VERSION#v}" | cut -d. -f2)"
M=helm.sh/helm/v3
LDFLAGS="-s -w"
LDFLAGS+=" -X ${M}/internal/version.version=${HELM_VERSION}"
LDFLAGS+=" -X ${M}/internal/version.gitTreeState=clean"
LDFLAGS+=" -X ${M}/internal/version.metadata="
LDFLAGS+=" -X ${M}/pkg/lint/rules.k8sVersionMajor=${KUBE_MAJOR}"
LDFLAGS+=" -X ${M}/pkg/lint/rules.k8sVersionMinor=${KUBE_MINOR}"
LDFLAGS+=" -X ${M}/pkg/chartutil.k8sVersionMajor=${KUBE_MAJOR}"
LDFLAGS+=" -X ${M}/pkg/chartutil.k8sVersionMinor=${KUBE_MINOR}"

t0=${SECONDS}
log "go install ${M}/cmd/helm@${HELM_VERSION} ..."
# `go install pkg@version` runs outside any module: GOFLAGS=-mod=mod is not allowed there.
GOFLAGS='' GOBIN="${STAGE}/bin" go install -trimpath -ldflags "${LDFLAGS}" "${M}/cmd/helm@${HELM_VERSION}" >&2 ||
    die "go install ${M}/cmd/helm@${HELM_VERSION} failed (output above)"
log "go install: done in $((SECONDS - t0))s"

got="$("${STAGE}/bin/helm" version --template '{{.Version}}' 2>&1)" || die "helm version failed: ${got}"
[[ "${got}" == "${HELM_VERSION}" ]] || die "helm reports version '${got}', expected '${HELM_VERSION}'"
# Helm prints the Kubernetes version it assumes in `helm template`'s .Capabilities.
cap="$(
    cd "${STAGE}" && mkdir -p probe/templates &&
        printf 'apiVersion: v2\nname: probe\nversion: 0.0.1\n' >probe/Chart.yaml &&
        printf 'kube: "{{ .Capabilities.KubeVersion.Version }}"\n' >probe/templates/cm.yaml &&
        "${STAGE}/bin/helm" template probe ./probe 2>&1
)" || die "helm template of a probe chart failed: ${cap}"
rm -rf "${STAGE}/probe"
grep -q "kube: \"v${KUBE_VERSION#v}\"" <<<"${cap}" ||
    grep -q "kube: \"v${KUBE_MAJOR}.${KUBE_MINOR}.0\"" <<<"${cap}" ||
    die "helm assumes another Kubernetes version than ${KUBE_VERSION}: ${cap}"

printf 'helm=%s kube=%s\n' "${HELM_VERSION}" "${KUBE_VERSION}" >"${STAGE}/versions"
date -u +%Y-%m-%dT%H:%M:%SZ >"${STAGE}/.complete"
mv -T "${STAGE}" "${OUT}"
log "complete: ${OUT}"
echo "${BIN}"
