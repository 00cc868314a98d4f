#!/usr/bin/env bash
# Set up ./.venv with jaxvpp and its test dependencies, using the first Python >= 3.12 found.
# Usage: scripts/setup.sh            (idempotent: a second run only re-checks the install)
set -euo pipefail
cd "$(dirname "$0")/.."

ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
    local c
    for c in "${PYTHON:-}" python3.14 python3.13 python3.12 python3 python; do
        [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && ok "$(command -v "$c")" && { command -v "$c"; return 0; }
    done
    # pyenv installs that are not on PATH
    local root
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for c in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
        ok "$c" && { echo "$c"; return 0; }
    done
    for c in /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
        [ -x "$c" ] && ok "$c" && { echo "$c"; return 0; }
    done
    return 1
}

if [ -x .venv/bin/python ] && ok .venv/bin/python; then
    :
else
    PY="$(find_python)" || { echo "error: jaxvpp needs Python >= 3.12; none found (set PYTHON=/path/to/python3.12)" >&2; exit 1; }
    echo "setting up .venv with $PY ($("$PY" --version 2>&1))" >&2
    rm -rf .venv
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import jaxvpp, pytest, hypothesis, cvxpy' >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip >&2
    .venv/bin/python -m pip install --quiet -e '.[test]' >&2
    touch .venv/.installed
fi
