#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install rotabot with its dev extra; re-install only when
# pyproject.toml or the interpreter changed, so re-runs take well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.rotabot-install-stamp"

pick_python() {
    local c
    for c in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

if ! PY=$(pick_python); then
    echo "ensure-venv: Python >= 3.11 not found; install it (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

# A venv whose interpreter no longer runs (moved repo, removed base Python) is rebuilt.
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "ensure-venv: $VENV is broken; recreating it"
    rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
        # Debian splits ensurepip into python3-venv; without it `python3 -m venv` fails.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq "python${ver}-venv" || apt-get install -y -qq python3-venv
        else
            echo "ensure-venv: $PY cannot create a venv; install it: apt-get install python3-venv" >&2
            exit 1
        fi
    fi
    echo "ensure-venv: creating $VENV with $PY ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV"
fi

want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$VENV/bin/python" -c 'import sys; print(sys.version)' | head -1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import bot' >/dev/null 2>&1; then
    exit 0
fi

echo "ensure-venv: installing rotabot[dev] into $VENV"
# Build-backend warnings are noise on success; the full log is shown only when pip fails.
LOG="$VENV/pip-install.log"
if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
       "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[dev]'; } >"$LOG" 2>&1; then
    tail -n 60 "$LOG" >&2
    echo "ensure-venv: pip install failed (full log: $LOG)" >&2
    exit 1
fi
printf '%s\n' "$want" > "$STAMP"
