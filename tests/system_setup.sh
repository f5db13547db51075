#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a PostgreSQL server (the audit trail's PostgreSQL store is
# tested against a real one, started privately by the tests) and Chromium (the HTML rationale report is rendered in
# a real headless browser). Installs only what is missing, with Debian's apt-get, so running it again is a no-op;
# `make test` (and so CI) runs it before pytest.
#
# It never stops the test run: whatever it cannot install (no apt-get, not root, mirrors unreachable) it names, with
# the tests that will be skipped for it, and exits 0. A bare `make test` then reports those skips at the end; CI
# (IMT_CDS_STRICT=1, set by .ci/run) turns each of them into a failure, so a missing install step cannot hide there.
set -uo pipefail
# The tests of this script point ROOT at a scratch directory, to play a machine where nothing is installed.
ROOT=${SYSTEM_SETUP_ROOT:-}

missing_now() {
    local missing=()
    # Debian installs PostgreSQL's server binaries under /usr/lib/postgresql/<version>/bin/ (not on PATH).
    if ! compgen -G "$ROOT/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
        missing+=(chromium)
    fi
    echo "${missing[@]}"
}

give_up() {  # $1: why; the packages still missing follow
    local why=$1
    shift
    echo "system_setup: WARNING: could not install $*: $why" >&2
    for package in "$@"; do
        case $package in
            postgresql) echo "system_setup:   the PostgreSQL audit-store tests (marker 'system') will be skipped" >&2 ;;
            chromium) echo "system_setup:   the headless-Chromium report test (marker 'system') will be skipped" >&2 ;;
        esac
    done
    echo "system_setup:   (under IMT_CDS_STRICT=1, as in CI, each of those skips is a failure)" >&2
    exit 0
}

read -r -a missing <<<"$(missing_now)"
if [ "${#missing[@]}" -eq 0 ]; then
    echo "system_setup: PostgreSQL and Chromium are installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || give_up "there is no apt-get here; install them by hand" "${missing[@]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        give_up "not root and no password-less sudo; install them as root" "${missing[@]}"
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "system_setup: installing ${missing[*]}"
# Update the package lists first only when there are none; if the install fails (stale lists), update and retry once.
if ! compgen -G "$ROOT/var/lib/apt/lists/*_Packages*" >/dev/null; then
    "${SUDO[@]}" apt-get update -qq || echo "system_setup: apt-get update failed; trying the install anyway" >&2
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    "${SUDO[@]}" apt-get update -qq || true
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || true
fi

read -r -a still <<<"$(missing_now)"
if [ "${#still[@]}" -gt 0 ]; then
    give_up "apt-get failed (are the package mirrors reachable?)" "${still[@]}"
fi
echo "system_setup: installed ${missing[*]}"
