#!/usr/bin/env bash
# Build (once, then cache) a real Kubernetes control plane for the `k8s` test tier:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                                               (go.etcd.io/etcd/server/v3)
#   kwok + its stage definitions                                       (sigs.k8s.io/kwok)
# Everything comes from the Go module proxy; nothing else is downloaded.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/controlplane/<versions-hash>/bin/ (and kwok-stages/),
# complete once every binary answered --version; caching, locking and the last line of stdout:
# tests/bed/build-lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../build-lib.sh"

K8S_VERSION="${AIDC_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${AIDC_ETCD_VERSION:-v3.6.14}"
KWOK_VERSION="${AIDC_KWOK_VERSION:-v0.8.0}"
# Bump when the recipe below changes in a way that changes the output.
RECIPE=1

bed_begin controlplane "k8s=${K8S_VERSION} etcd=${ETCD_VERSION} kwok=${KWOK_VERSION} recipe=${RECIPE}" \
    "Go >= 1.26 to build Kubernetes ${K8S_VERSION}"
mkdir -p "${STAGE}/kwok-stages"

# ---------------------------------------------------------------- Kubernetes
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with
# ./staging/src paths, so `go install k8s.io/kubernetes/cmd/...@v1.36.3`
# cannot work. A wrapper module requires k8s.io/kubernetes and replaces every
# staging module with its published v0.X.Y tag instead.
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
K8S_MAJOR=1
K8S_MINOR="$(echo "${K8S_VERSION#v}" | cut -d. -f2)"

(
    cd "${WORK}" && mkdir k8s && cd k8s
    K8S_GOMOD="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | go_mod_field GoMod)"
    [[ -n "${K8S_GOMOD}" && -f "${K8S_GOMOD}" ]] || die "could not download k8s.io/kubernetes@${K8S_VERSION} from the Go module proxy"
    STAGING="$(awk '/^replace \(/{inblock=1; next} inblock && /^\)/{inblock=0} inblock && $1 ~ /^k8s\.io\// && $2 == "=>" {print $1}' "${K8S_GOMOD}")"
    [[ -n "${STAGING}" ]] || die "found no k8s.io/* replace entries in ${K8S_GOMOD}"
    {
        go_mod_header aidc.local/controlplane-k8s "${K8S_GOMOD}"
        echo
        echo "require k8s.io/kubernetes ${K8S_VERSION}"
        echo
        echo "replace ("
        for m in ${STAGING}; do echo "	${m} => ${m} ${STAGING_VERSION}"; done
        echo ")"
    } >go.mod
    log "kubernetes wrapper go.mod: $(echo "${STAGING}" | wc -l) staging modules pinned to ${STAGING_VERSION}"
    LDFLAGS="$(go_ldflags \
        "k8s.io/component-base/version.gitVersion=${K8S_VERSION}" \
        "k8s.io/component-base/version.gitMajor=${K8S_MAJOR}" \
        "k8s.io/component-base/version.gitMinor=${K8S_MINOR}" \
        "k8s.io/component-base/version.gitTreeState=clean" \
        "k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}" \
        "k8s.io/client-go/pkg/version.gitMajor=${K8S_MAJOR}" \
        "k8s.io/client-go/pkg/version.gitMinor=${K8S_MINOR}")"
    go_step "go mod download (kubernetes ${K8S_VERSION})" go mod download k8s.io/kubernetes
    go_step "go build kube-apiserver kube-controller-manager kube-scheduler kubectl" \
        go build -trimpath -ldflags "${LDFLAGS}" -o "${STAGE}/bin/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kubectl
)

# ---------------------------------------------------------------------- etcd
# go.etcd.io/etcd/server/v3 is itself the etcd main package; its go.mod has
# local replaces too (../api, ...) but those are ignored in a wrapper, and it
# requires the matching published api/client/pkg modules.
(
    cd "${WORK}" && mkdir etcd && cd etcd
    printf 'module aidc.local/controlplane-etcd\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "${ETCD_VERSION}" >go.mod
    go_step "go build etcd ${ETCD_VERSION}" \
        go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
        -o "${STAGE}/bin/etcd" go.etcd.io/etcd/server/v3
)

# ---------------------------------------------------------------------- kwok
(
    cd "${WORK}"
    # `go install pkg@version` runs outside any module; -mod=mod is not allowed there.
    GOFLAGS='' GOBIN="${STAGE}/bin" go_step "go install kwok ${KWOK_VERSION}" \
        go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
        "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
    KWOK_DIR="$(GOFLAGS='' go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | go_mod_field Dir)"
    [[ -d "${KWOK_DIR}/kustomize/stage" ]] || die "kwok stage definitions not found under ${KWOK_DIR}/kustomize/stage"
    for s in node/fast node/heartbeat-with-lease pod/fast; do
        mkdir -p "${STAGE}/kwok-stages/${s}"
        copy_yaml "${KWOK_DIR}/kustomize/stage/${s}" "${STAGE}/kwok-stages/${s}" ||
            die "no stage YAML in ${KWOK_DIR}/kustomize/stage/${s}"
    done
)

# -------------------------------------------------------------------- verify
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok; do
    [[ -x "${STAGE}/bin/${b}" ]] || die "${b} was not built into ${STAGE}/bin"
done
got="$("${STAGE}/bin/kube-apiserver" --version 2>&1)" || die "kube-apiserver --version failed: ${got}"
[[ "${got}" == "Kubernetes ${K8S_VERSION}" ]] || die "kube-apiserver reports '${got}', expected 'Kubernetes ${K8S_VERSION}'"
"${STAGE}/bin/kube-controller-manager" --version >/dev/null 2>&1 || die "kube-controller-manager --version failed"
"${STAGE}/bin/kube-scheduler" --version >/dev/null 2>&1 || die "kube-scheduler --version failed"
"${STAGE}/bin/kubectl" version --client >/dev/null 2>&1 || die "kubectl version --client failed"
got="$("${STAGE}/bin/etcd" --version 2>&1)" || die "etcd --version failed: ${got}"
grep -q "etcd Version: ${ETCD_VERSION#v}" <<<"${got}" || die "etcd reports '${got}', expected ${ETCD_VERSION}"
"${STAGE}/bin/kwok" --version >/dev/null 2>&1 || die "kwok --version failed"

bed_finish
