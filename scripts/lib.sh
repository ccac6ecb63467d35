# Shared by the scripts in this folder: find the Swift toolchain and install the Debian
# packages offloadfs needs, only when something is missing.

offloadfs_find_swift() {
    if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
        export PATH=/opt/swift/usr/bin:$PATH
    fi
    command -v swift >/dev/null 2>&1 || { echo "error: no Swift toolchain on PATH (or in /opt/swift)" >&2; exit 1; }
}

# offloadfs_apt_install PACKAGE... : installs the packages that are not installed yet.
offloadfs_apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# offloadfs_export_commit : exports OFFLOADFS_GIT_COMMIT (the commit `offloadfs --version`
# names, see Package.swift) from the checkout: 12 hex digits, "-modified" when tracked files
# differ from HEAD. Outside a git checkout it is left as it is (unset: "commit unknown").
offloadfs_export_commit() {
    [ -n "${OFFLOADFS_GIT_COMMIT:-}" ] && { export OFFLOADFS_GIT_COMMIT; return 0; }
    command -v git >/dev/null 2>&1 || return 0
    local commit
    commit=$(git -C "$(dirname "${BASH_SOURCE[0]}")/.." rev-parse --short=12 HEAD 2>/dev/null) || return 0
    if ! git -C "$(dirname "${BASH_SOURCE[0]}")/.." diff --quiet HEAD -- 2>/dev/null; then
        commit="$commit-modified"
    fi
    export OFFLOADFS_GIT_COMMIT=$commit
}
