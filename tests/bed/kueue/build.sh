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
# The last line of stdout is the bin dir. Progress goes to stderr.
#
# A build is taken as complete only when <hash>/.complete exists; it is written
# after the binary was built and answered --version, and the directory is moved
# into place with a rename, so an interrupted build is never reused.
set -euo pipefail

KUEUE_VERSION="${AIDC_KUEUE_VERSION:-v0.17.0}"
# Bump when the recipe below changes in a way that changes the output.
RECIPE=2

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
export GOFLAGS=-mod=mod

log() { printf '[kueue/build] %s\n' "$*" >&2; }
die() {
    printf '\n[kueue/build] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v go >/dev/null 2>&1 || die "the 'go' command is not on PATH (need Go >= 1.26 to build Kueue ${KUEUE_VERSION})"
command -v flock >/dev/null 2>&1 || die "the 'flock' command (util-linux) is not on PATH"

VERSIONS="kueue=${KUEUE_VERSION} recipe=${RECIPE}"
HASH="$(printf '%s' "${VERSIONS}" | sha256sum | cut -c1-16)"
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/aidc/kueue"
OUT="${ROOT}/${HASH}"
BIN="${OUT}/bin"
STAMP="${OUT}/.complete"

mkdir -p "${ROOT}"

if [[ -f "${STAMP}" ]]; then
    echo "${BIN}"
    exit 0
fi

# One builder at a time (two test sessions starting at once must not race).
exec 9>"${ROOT}/.lock"
log "waiting for the build lock ${ROOT}/.lock"
flock 9
if [[ -f "${STAMP}" ]]; then
    echo "${BIN}"
    exit 0
fi

log "building ${VERSIONS} into ${OUT} (first build takes a long while)"
log "go: $(go version)"

STAGE="${ROOT}/${HASH}.partial"
# Leftovers of builds that died (any versions): we hold the lock, so nobody is using them.
rm -rf "${ROOT}"/*.partial "${ROOT}"/work.*
WORK="$(mktemp -d "${ROOT}/work.XXXXXX")"
cleanup() { rm -rf "${WORK}" "${STAGE}"; }
trap cleanup EXIT
# The stamp is written before the rename, so a final dir without it is not
# ours to trust (e.g. hand-edited): start over.
rm -rf "${OUT}"
mkdir -p "${STAGE}/bin" "${STAGE}/crd" "${STAGE}/crd-conversion" "${STAGE}/webhook" "${STAGE}/visibility"

go_step() { # go_step DESCRIPTION CMD...
    local what="$1"
    shift
    local t0=${SECONDS}
    log "${what} ..."
    if ! "$@" >&2; then
        die "${what} failed (command: $*). Output above."
    fi
    log "${what}: done in $((SECONDS - t0))s"
}

# --------------------------------------------------------------------- kueue
# sigs.k8s.io/kueue's go.mod has no local replaces, but its main package is
# built from a wrapper module (as for etcd) so that -mod=mod resolves exactly
# the versions kueue's own go.mod requires.
(
    cd "${WORK}" && mkdir kueue && cd kueue
    KUEUE_JSON="$(go mod download -json "sigs.k8s.io/kueue@${KUEUE_VERSION}")" ||
        die "could not download sigs.k8s.io/kueue@${KUEUE_VERSION} from the Go module proxy"
    KUEUE_GOMOD="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"${KUEUE_JSON}")"
    KUEUE_DIR="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"${KUEUE_JSON}")"
    [[ -n "${KUEUE_GOMOD}" && -f "${KUEUE_GOMOD}" ]] || die "no go.mod for sigs.k8s.io/kueue@${KUEUE_VERSION}"
    [[ -d "${KUEUE_DIR}/config/components/crd/bases" ]] || die "no CRDs under ${KUEUE_DIR}/config/components/crd/bases"
    GO_LINE="$(grep -m1 '^go ' "${KUEUE_GOMOD}")"
    GODEBUG_LINE="$(grep -m1 '^godebug ' "${KUEUE_GOMOD}" || true)"
    {
        echo "module aidc.local/kueue"
        echo
        echo "${GO_LINE}"
        [[ -z "${GODEBUG_LINE}" ]] || echo "${GODEBUG_LINE}"
        echo
        echo "require sigs.k8s.io/kueue ${KUEUE_VERSION}"
    } >go.mod
    # kueue's Makefile stamps the version into pkg/version.
    LDFLAGS="-s -w"
    LDFLAGS+=" -X sigs.k8s.io/kueue/pkg/version.GitVersion=${KUEUE_VERSION}"
    LDFLAGS+=" -X sigs.k8s.io/kueue/pkg/version.GitCommit=${KUEUE_VERSION}"
    go_step "go mod download (kueue ${KUEUE_VERSION})" go mod download sigs.k8s.io/kueue
    go_step "go build kueue ${KUEUE_VERSION}" \
        go build -trimpath -ldflags "${LDFLAGS}" -o "${STAGE}/bin/kueue" sigs.k8s.io/kueue/cmd/kueue

    copy_yaml() { # copy_yaml SRC_DIR DEST_DIR
        local found=0 f
        for f in "$1"/*.yaml; do
            [[ -e "$f" ]] || continue
            [[ "$(basename "$f")" == kustomization.yaml ]] && continue
            cp "$f" "$2/"
            chmod u+w "$2/$(basename "$f")"
            found=1
        done
        [[ ${found} == 1 ]]
    }
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

printf '%s\n' "${VERSIONS}" >"${STAGE}/versions"
date -u +%Y-%m-%dT%H:%M:%SZ >"${STAGE}/.complete"
mv -T "${STAGE}" "${OUT}"
log "complete: ${OUT}"
echo "${BIN}"
