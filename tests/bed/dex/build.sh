#!/usr/bin/env bash
# Build (once, then cache) Dex, the OpenID Connect provider of the OIDC tests
# (tests/bed/dex.py starts it). It comes from the Go module proxy; nothing else is downloaded.
#
# Dex's module path has no /v2 (github.com/dexidp/dex) and its go.mod replaces
# github.com/dexidp/dex/api/v2 with ./api/v2, a directory that is not in the module
# zip, so `go install github.com/dexidp/dex/cmd/dex@...` cannot work. A wrapper module
# requires the pseudo-version of the v2.45.1 commit and the published api/v2 module.
#
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/dex/<versions-hash>/bin/dex, complete once it
# answered `dex version`; caching, locking and the last line of stdout (the bin dir):
# tests/bed/build-lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../build-lib.sh"

DEX_VERSION="v0.0.0-20260303133905-11d2eeb52b42" # the commit tagged v2.45.1
DEX_TAG="v2.45.1"
DEX_API_VERSION="v2.4.0" # github.com/dexidp/dex/api/v2, as Dex's own go.mod requires it

# Bump when the recipe below changes in a way that changes the output.
RECIPE=1

# memory storage (tests/bed/dex.py) needs no sqlite, so no cgo and no C compiler (build-lib.sh: CGO_ENABLED=0)
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

# The last arguments: the cache built when the key was a hash of this script.
bed_begin dex "dex=${DEX_TAG} (${DEX_VERSION}) api=${DEX_API_VERSION} recipe=${RECIPE}" \
    "Go >= 1.25 to build Dex ${DEX_TAG}" \
    "dex=v2.45.1 (v0.0.0-20260303133905-11d2eeb52b42) api=v2.4.0 recipe=1" e77e11f9f4b1bf4c

(
    cd "${WORK}"
    DEX_GOMOD="$(go mod download -json "github.com/dexidp/dex@${DEX_VERSION}" | go_mod_field GoMod)"
    [[ -n "${DEX_GOMOD}" && -f "${DEX_GOMOD}" ]] ||
        die "could not download github.com/dexidp/dex@${DEX_VERSION} from the Go module proxy (${GOPROXY})"
    grep -q "github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}" "${DEX_GOMOD}" ||
        die "Dex's go.mod no longer requires github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}; update DEX_API_VERSION in $0"
    {
        go_mod_header aidc.local/dex "${DEX_GOMOD}"
        echo
        echo "require ("
        echo "	github.com/dexidp/dex ${DEX_VERSION}"
        echo "	github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}"
        echo ")"
        echo
        # Dex's own replace (=> ./api/v2) is ignored in a dependency; pin the published module instead
        echo "replace github.com/dexidp/dex/api/v2 => github.com/dexidp/dex/api/v2 ${DEX_API_VERSION}"
    } >go.mod
    go_step "go mod download (Dex's dependencies)" go mod download github.com/dexidp/dex
    go_step "go build github.com/dexidp/dex/cmd/dex" \
        go build -trimpath -ldflags "-s -w -X main.version=${DEX_TAG}" -o "${STAGE}/bin/dex" github.com/dexidp/dex/cmd/dex
)

[[ -x "${STAGE}/bin/dex" ]] || die "dex was not built into ${STAGE}/bin"
got="$("${STAGE}/bin/dex" version 2>&1)" || die "dex version failed: ${got}"
grep -q "${DEX_TAG}" <<<"${got}" || die "dex reports '${got}', expected ${DEX_TAG}"

bed_finish
