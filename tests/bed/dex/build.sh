#!/usr/bin/env bash
# Build (once, then cache) Dex, the OpenID Connect provider of the OIDC tests
# (tests/bed/dex.py starts it). It comes from the Go module proxy; nothing else is downloaded.
#
# Dex's module path has no /v2 (github.com/dexidp/dex) and its go.mod replaces
# github.com/dexidp/dex/api/v2 with ./api/v2, a directory that is not in the module
# zip, so `go install github.com/dexidp/dex/cmd/dex@...` cannot work. A wrapper module
# requires the pseudo-version of the v2.45.1 commit and the published api/v2 module.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/dex/<hash of this script>/bin/dex
# The last line of stdout is that bin dir. Progress goes to stderr.
#
# A build is taken as complete only when <hash>/.complete exists; it is written after
# the binary answered `dex version`, and the directory is moved into place with a
# rename, so an interrupted build is never reused. Changing this script (a version,
# the recipe) changes the hash, so the next run builds anew.
set -euo pipefail

DEX_VERSION="v0.0.0-20260303133905-11d2eeb52b42" # the commit tagged v2.45.1
DEX_TAG="v2.45.1"
DEX_API_VERSION="v2.4.0" # github.com/dexidp/dex/api/v2, as Dex's own go.mod requires it

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# memory storage (tests/bed/dex.py) needs no sqlite, so no cgo and no C compiler
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

log() { printf '[dex/build] %s\n' "$*" >&2; }
die() {
    printf '\n[dex/build] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v go >/dev/null 2>&1 || die "the 'go' command is not on PATH (need Go >= 1.25 to build Dex ${DEX_TAG})"
command -v flock >/dev/null 2>&1 || die "the 'flock' command (util-linux) is not on PATH"

HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/aidc/dex"
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

log "building Dex ${DEX_TAG} (${DEX_VERSION}) into ${OUT}"
log "go: $(go version)"

STAGE="${ROOT}/${HASH}.partial"
# Leftovers of builds that died: we hold the lock, so nobody is using them.
rm -rf "${ROOT}"/*.partial "${ROOT}"/work.*
WORK="$(mktemp -d "${ROOT}/work.XXXXXX")"
cleanup() { rm -rf "${WORK}" "${STAGE}"; }
trap cleanup EXIT
rm -rf "${OUT}"
mkdir -p "${STAGE}/bin"

(
    cd "${WORK}"
    DEX_GOMOD="$(go mod download -json "github.com/dexidp/dex@${DEX_VERSION}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -n "${DEX_GOMOD}" && -f "${DEX_GOMOD}" ]] ||
        die "could not download github.com/dexidp/dex@${DEX_VERSION} from the Go module proxy (${GOPROXY})"
    GO_LINE="$(grep -m1 '^go ' "${DEX_GOMOD}")"
    grep -q "github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}" "${DEX_GOMOD}" ||
        die "Dex's go.mod no longer requires github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}; update DEX_API_VERSION in $0"
    {
        echo "module aidc.local/dex"
        echo
        echo "${GO_LINE}"
        echo
        echo "require ("
        echo "	github.com/dexidp/dex ${DEX_VERSION}"
        echo "	github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}"
        echo ")"
        echo
        # Dex's own replace (=> ./api/v2) is ignored in a dependency; pin the published module instead
        echo "replace github.com/dexidp/dex/api/v2 => github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}"
    } >go.mod
    t0=${SECONDS}
    log "go build github.com/dexidp/dex/cmd/dex ..."
    go mod download github.com/dexidp/dex >&2 || die "go mod download of Dex's dependencies failed (output above)"
    go build -trimpath -ldflags "-s -w -X main.version=${DEX_TAG}" \
        -o "${STAGE}/bin/dex" github.com/dexidp/dex/cmd/dex >&2 ||
        die "go build github.com/dexidp/dex/cmd/dex failed (output above)"
    log "go build dex: done in $((SECONDS - t0))s"
)

[[ -x "${STAGE}/bin/dex" ]] || die "dex was not built into ${STAGE}/bin"
got="$("${STAGE}/bin/dex" version 2>&1)" || die "dex version failed: ${got}"
grep -q "${DEX_TAG}" <<<"${got}" || die "dex reports '${got}', expected ${DEX_TAG}"

printf 'dex=%s (%s) api=%s\n' "${DEX_TAG}" "${DEX_VERSION}" "${DEX_API_VERSION}" >"${STAGE}/versions"
date -u +%Y-%m-%dT%H:%M:%SZ >"${STAGE}/.complete"
mv -T "${STAGE}" "${OUT}"
log "complete: ${OUT}"
echo "${BIN}"
