#!/usr/bin/env bash
# Build (once, then cache) Kueue for the `k8s` test tier:
#   kueue (the controller manager, sigs.k8s.io/kueue/cmd/kueue)
#   its CRDs, webhook configurations and visibility APIService manifests (from the same module)
# Everything comes from the Go module proxy; nothing else is downloaded.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/kueue/<versions-hash>/
#   bin/kueue
#   crd/*.yaml          config/components/crd/bases
#   crd-conversion/*.yaml  the conversion-webhook patches config/components/crd/kustomization.yaml applies
#   webhook/*.yaml      config/components/webhook
#   visibility/*.yaml   config/components/visibility (when the module has it)
# complete once bin/kueue proved built from that version; caching, locking and the last line
# of stdout (the bin dir): tests/bed/build-lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../build-lib.sh"

KUEUE_VERSION="${AIDC_KUEUE_VERSION:-v0.17.0}"
# Bump when the recipe below changes in a way that changes the output.
RECIPE=2

bed_begin kueue "kueue=${KUEUE_VERSION} recipe=${RECIPE}" "Go >= 1.26 to build Kueue ${KUEUE_VERSION}"
mkdir -p "${STAGE}/crd" "${STAGE}/crd-conversion" "${STAGE}/webhook" "${STAGE}/visibility"

# --------------------------------------------------------------------- kueue
# sigs.k8s.io/kueue's go.mod has no local replaces, but its main package is
# built from a wrapper module (as for etcd) so that -mod=mod resolves exactly
# the versions kueue's own go.mod requires.
(
    cd "${WORK}" && mkdir kueue && cd kueue
    KUEUE_JSON="$(go mod download -json "sigs.k8s.io/kueue@${KUEUE_VERSION}")" ||
        die "could not download sigs.k8s.io/kueue@${KUEUE_VERSION} from the Go module proxy"
    KUEUE_GOMOD="$(go_mod_field GoMod <<<"${KUEUE_JSON}")"
    KUEUE_DIR="$(go_mod_field Dir <<<"${KUEUE_JSON}")"
    [[ -n "${KUEUE_GOMOD}" && -f "${KUEUE_GOMOD}" ]] || die "no go.mod for sigs.k8s.io/kueue@${KUEUE_VERSION}"
    [[ -d "${KUEUE_DIR}/config/components/crd/bases" ]] || die "no CRDs under ${KUEUE_DIR}/config/components/crd/bases"
    {
        go_mod_header aidc.local/kueue "${KUEUE_GOMOD}"
        echo
        echo "require sigs.k8s.io/kueue ${KUEUE_VERSION}"
    } >go.mod
    # kueue's Makefile stamps the version into pkg/version.
    LDFLAGS="$(go_ldflags \
        "sigs.k8s.io/kueue/pkg/version.GitVersion=${KUEUE_VERSION}" \
        "sigs.k8s.io/kueue/pkg/version.GitCommit=${KUEUE_VERSION}")"
    go_step "go mod download (kueue ${KUEUE_VERSION})" go mod download sigs.k8s.io/kueue
    go_step "go build kueue ${KUEUE_VERSION}" \
        go build -trimpath -ldflags "${LDFLAGS}" -o "${STAGE}/bin/kueue" sigs.k8s.io/kueue/cmd/kueue

    copy_yaml "${KUEUE_DIR}/config/components/crd/bases" "${STAGE}/crd" ||
        die "no CRD YAML in ${KUEUE_DIR}/config/components/crd/bases"
    # Only the patches the kustomization uses (some are listed but commented out).
    for p in $(sed -n 's/^- path: \(patches\/webhook_in_[a-z]*\.yaml\)[[:space:]]*$/\1/p' \
        "${KUEUE_DIR}/config/components/crd/kustomization.yaml"); do
        cp "${KUEUE_DIR}/config/components/crd/${p}" "${STAGE}/crd-conversion/"
        chmod u+w "${STAGE}/crd-conversion/$(basename "${p}")"
    done
    copy_yaml "${KUEUE_DIR}/config/components/webhook" "${STAGE}/webhook" ||
        die "no webhook YAML in ${KUEUE_DIR}/config/components/webhook"
    if [[ -d "${KUEUE_DIR}/config/components/visibility" ]]; then
        copy_yaml "${KUEUE_DIR}/config/components/visibility" "${STAGE}/visibility" || true
    fi
    log "copied $(ls "${STAGE}/crd" | wc -l) CRDs, $(ls "${STAGE}/crd-conversion" | wc -l) conversion patches, $(ls "${STAGE}/webhook" | wc -l) webhook and $(ls "${STAGE}/visibility" | wc -l) visibility manifests"
)

# -------------------------------------------------------------------- verify
[[ -x "${STAGE}/bin/kueue" ]] || die "kueue was not built into ${STAGE}/bin"
# kueue has no --version flag: ask the Go build info which kueue module went in.
got="$(go version -m "${STAGE}/bin/kueue" 2>&1)" || die "go version -m ${STAGE}/bin/kueue failed: ${got}"
grep -Eq "^[[:space:]]+(mod|dep)[[:space:]]+sigs\.k8s\.io/kueue[[:space:]]+${KUEUE_VERSION//./\\.}[[:space:]]" <<<"${got}" ||
    die "${STAGE}/bin/kueue was not built from sigs.k8s.io/kueue ${KUEUE_VERSION}: $(grep kueue <<<"${got}")"
for d in crd crd-conversion webhook; do
    ls "${STAGE}/${d}"/*.yaml >/dev/null 2>&1 || die "no ${d} manifests in ${STAGE}/${d}"
done

bed_finish
