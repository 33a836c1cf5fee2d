#!/usr/bin/env bash
# Build (once, then cache) the `helm` command for the `chart` test tier, from the Go module proxy:
#   go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION}
# with the -X flags of Helm's own Makefile (version, and the Kubernetes version that
# `helm lint` and `helm template` assume as .Capabilities.KubeVersion).
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/helm/<versions-hash>/bin/helm, complete once
# `helm version` and a probe chart answered with the expected versions; caching, locking and
# the last line of stdout (the bin dir): tests/bed/build-lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../build-lib.sh"

HELM_VERSION="v3.21.4"
# The Kubernetes version Helm reports as .Capabilities.KubeVersion for `helm template` and `helm lint`:
# the version of the test control plane (tests/bed/controlplane/build.sh).
KUBE_VERSION="v1.36.3"

# Bump when the recipe below changes in a way that changes the output.
RECIPE=1

# The last arguments: the cache built when the key was a hash of this script.
bed_begin helm "helm=${HELM_VERSION} kube=${KUBE_VERSION} recipe=${RECIPE}" "Go >= 1.24 to build helm ${HELM_VERSION}" \
    "helm=v3.21.4 kube=v1.36.3 recipe=1" 7dd634198a7d5c0f

KUBE_MAJOR="$(echo "${KUBE_VERSION#v}" | cut -d. -f1)"
KUBE_MINOR="$(echo "${KUBE_VERSION#v}" | cut -d. -f2)"
M=helm.sh/helm/v3
LDFLAGS="$(go_ldflags \
    "${M}/internal/version.version=${HELM_VERSION}" \
    "${M}/internal/version.gitTreeState=clean" \
    "${M}/internal/version.metadata=" \
    "${M}/pkg/lint/rules.k8sVersionMajor=${KUBE_MAJOR}" \
    "${M}/pkg/lint/rules.k8sVersionMinor=${KUBE_MINOR}" \
    "${M}/pkg/chartutil.k8sVersionMajor=${KUBE_MAJOR}" \
    "${M}/pkg/chartutil.k8sVersionMinor=${KUBE_MINOR}")"

# `go install pkg@version` runs outside any module: GOFLAGS=-mod=mod is not allowed there.
GOFLAGS='' GOBIN="${STAGE}/bin" go_step "go install ${M}/cmd/helm@${HELM_VERSION}" \
    go install -trimpath -ldflags "${LDFLAGS}" "${M}/cmd/helm@${HELM_VERSION}"

got="$("${STAGE}/bin/helm" version --template '{{.Version}}' 2>&1)" || die "helm version failed: ${got}"
[[ "${got}" == "${HELM_VERSION}" ]] || die "helm reports version '${got}', expected '${HELM_VERSION}'"
# Helm prints the Kubernetes version it assumes in `helm template`'s .Capabilities.
cap="$(
    cd "${WORK}" && mkdir -p probe/templates &&
        printf 'apiVersion: v2\nname: probe\nversion: 0.0.1\n' >probe/Chart.yaml &&
        printf 'kube: "{{ .Capabilities.KubeVersion.Version }}"\n' >probe/templates/cm.yaml &&
        "${STAGE}/bin/helm" template probe ./probe 2>&1
)" || die "helm template of a probe chart failed: ${cap}"
grep -q "kube: \"v${KUBE_VERSION#v}\"" <<<"${cap}" ||
    grep -q "kube: \"v${KUBE_MAJOR}.${KUBE_MINOR}.0\"" <<<"${cap}" ||
    die "helm assumes another Kubernetes version than ${KUBE_VERSION}: ${cap}"

bed_finish
