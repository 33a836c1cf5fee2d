# The recipe every tests/bed/*/build.sh shares: build once from the Go module proxy, then cache.
# Sourced, not run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../build-lib.sh"
#   bed_begin NAME "VERSIONS" "GO_NEEDED" [OLD_VERSIONS OLD_KEY]
#   ... build into ${STAGE} (bin/ is there), scratch files in ${WORK} ...
#   bed_finish
#
# The cache is ${XDG_CACHE_HOME:-$HOME/.cache}/aidc/NAME/<key>/, <key> the first 16 hex digits
# of the sha256 of VERSIONS (e.g. "kueue=v0.17.0 recipe=2": whatever changes the output, a
# version or the recipe, changes the key). The last line of stdout is <key>/bin; progress goes
# to stderr.
#
# A build is taken as complete only when <key>/.complete exists: bed_finish writes it into
# the staging dir after the script checked what it built, and moves that dir into place
# with a rename, so an interrupted build is never reused. One builder at a time: two test
# sessions starting at once wait for each other on <cache>/NAME/.lock.
# The Go build cache (go env GOCACHE) is left at its default, so a rebuild after a version
# bump of one component is quick for the others.

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
export GOFLAGS=-mod=mod

BED_NAME=build

log() { printf '[%s/build] %s\n' "${BED_NAME}" "$*" >&2; }
die() {
    printf '\n[%s/build] ERROR: %s\n' "${BED_NAME}" "$*" >&2
    exit 1
}

# bed_begin NAME VERSIONS GO_NEEDED [OLD_VERSIONS OLD_KEY]
#   NAME       the cache folder .../aidc/NAME and the log prefix
#   VERSIONS   what is built, written to <key>/versions; its hash is the key
#   GO_NEEDED  the Go the build needs, said when there is no `go` (e.g. "Go >= 1.26 to build X")
#   OLD_VERSIONS OLD_KEY  a cache built under another key (before the key was the hash of
#              VERSIONS): while VERSIONS is OLD_VERSIONS, the key is OLD_KEY
# Prints <key>/bin and exits when that build is complete. Otherwise waits for the build lock
# and sets OUT (<key>), BIN (OUT/bin), STAGE (the dir to build into, created with bin/) and
# WORK (a scratch dir); both are removed at exit unless bed_finish moved STAGE to OUT.
bed_begin() {
    BED_NAME="$1"
    VERSIONS="$2"
    command -v go >/dev/null 2>&1 || die "the 'go' command is not on PATH (need $3)"
    command -v flock >/dev/null 2>&1 || die "the 'flock' command (util-linux) is not on PATH"
    local key
    key="$(printf '%s' "${VERSIONS}" | sha256sum | cut -c1-16)"
    [[ $# -lt 5 || "${VERSIONS}" != "$4" ]] || key="$5"
    ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/aidc/${BED_NAME}"
    OUT="${ROOT}/${key}"
    BIN="${OUT}/bin"
    mkdir -p "${ROOT}"
    _bed_cached

    exec 9>"${ROOT}/.lock"
    log "waiting for the build lock ${ROOT}/.lock"
    flock 9
    _bed_cached

    log "building ${VERSIONS} into ${OUT} (a first build takes a while)"
    log "go: $(go version)"
    STAGE="${ROOT}/${key}.partial"
    # Leftovers of builds that died (any versions): we hold the lock, so nobody is using them.
    rm -rf "${ROOT}"/*.partial "${ROOT}"/work.*
    WORK="$(mktemp -d "${ROOT}/work.XXXXXX")"
    trap 'rm -rf "${WORK}" "${STAGE}"' EXIT
    # The stamp is written before the rename, so a final dir without it is not
    # ours to trust (e.g. hand-edited): start over.
    rm -rf "${OUT}"
    mkdir -p "${STAGE}/bin"
}

_bed_cached() {
    if [[ -f "${OUT}/.complete" ]]; then
        echo "${BIN}"
        exit 0
    fi
}

# bed_finish: mark the checked build in STAGE complete, move it into place, print its bin dir.
bed_finish() {
    printf '%s\n' "${VERSIONS}" >"${STAGE}/versions"
    date -u +%Y-%m-%dT%H:%M:%SZ >"${STAGE}/.complete"
    mv -T "${STAGE}" "${OUT}"
    log "complete: ${OUT}"
    echo "${BIN}"
}

# go_step DESCRIPTION CMD...: run CMD (output to stderr), dying with DESCRIPTION if it fails.
go_step() {
    local what="$1"
    shift
    local t0=${SECONDS}
    log "${what} ..."
    if ! "$@" >&2; then
        die "${what} failed (command: $*). Output above."
    fi
    log "${what}: done in $((SECONDS - t0))s"
}

# go_ldflags VAR=VALUE...: the -ldflags of a stripped build that sets each package variable VAR.
go_ldflags() {
    local flags="-s -w" x
    for x; do flags+=" -X ${x}"; done
    printf '%s' "${flags}"
}

# go_mod_field FIELD < `go mod download -json` output: the value of FIELD (GoMod, Dir, ...).
go_mod_field() {
    sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p"
}

# go_mod_header MODULE GOMOD: the start of a wrapper module's go.mod: its module line, and the
# go and godebug lines of GOMOD (the go.mod of the module it builds).
go_mod_header() {
    echo "module $1"
    echo
    grep -m1 '^go ' "$2"
    grep -m1 '^godebug ' "$2" || true
}

# copy_yaml SRC_DIR DEST_DIR: copy SRC_DIR/*.yaml but kustomization.yaml; fails if there was none.
copy_yaml() {
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
