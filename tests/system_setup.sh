#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a PostgreSQL server (the audit trail's PostgreSQL store is
# tested against a real one, started privately by the tests) and Chromium (the HTML rationale report is rendered in
# a real headless browser). Installs only what is missing, with Debian's apt-get, so running it again is a no-op;
# `make test` (and so CI) runs it before pytest. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

missing=()
# Debian installs PostgreSQL's server binaries under /usr/lib/postgresql/<version>/bin/ (not on PATH).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system_setup: PostgreSQL and Chromium are installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system_setup: missing ${missing[*]} and no apt-get here: install them by hand" >&2
    echo "system_setup: (the tests that need them will be skipped, each with its reason)" >&2
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "system_setup: missing ${missing[*]}; run as root (or install them) to test everything" >&2
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "system_setup: installing ${missing[*]}"
# Update the package lists only when they are missing or the first install attempt fails (stale lists).
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    "${SUDO[@]}" apt-get update -qq
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "system_setup: installed ${missing[*]}"
