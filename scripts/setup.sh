#!/usr/bin/env bash
# Idempotent development/CI set-up: creates .venv at the repo root (Python 3.11), installs the
# exact pins of requirements.lock under constraints.txt (CPU torch from find-links /opt/wheels),
# installs labelloop itself in editable mode, and makes PyPI's CUDA torchvision build load on the
# CPU torch (env/torchvision-cpu/install.py).  A second run is a no-op (~1 s): pip is skipped
# while the sha256 of requirements.lock + constraints.txt + pyproject.toml matches the stamp kept
# in .venv.  Usage: bash scripts/setup.sh   (PYTHON=/path/to/python3.11 to choose the interpreter)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.labelloop-setup.sha256"
LOG="$VENV/.labelloop-setup-pip.log"
START=$SECONDS
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "setup: $*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
    PY="${PYTHON:-}"
    if [[ -z "$PY" ]]; then
        for cand in python3.11 python3; do
            if command -v "$cand" >/dev/null 2>&1 \
                && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
                PY="$cand"
                break
            fi
        done
    fi
    if [[ -z "$PY" ]]; then
        say "no Python 3.11 found (tried python3.11, python3); set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    "$PY" -m venv "$VENV"
    say "created .venv with $("$VENV/bin/python" -V 2>&1)"
fi
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    say ".venv is not a working Python 3.11 venv ($("$VENV/bin/python" -V 2>&1 || true)); remove it and re-run" >&2
    exit 1
fi

want="$(cat requirements.lock constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" == "$have" ]]; then
    say "python packages up to date (requirements.lock, constraints.txt, pyproject.toml unchanged)"
else
    rm -f "$STAMP"
    pip_quiet() {
        if ! "$VENV/bin/python" -m pip "$@" >>"$LOG" 2>&1; then
            say "pip $* failed; last lines of $LOG:" >&2
            tail -n 40 "$LOG" >&2
            exit 1
        fi
    }
    : >"$LOG"
    pip_quiet install -c constraints.txt -r requirements.lock
    # setuptools comes from requirements.lock, so no isolated build environment is needed.
    pip_quiet install --no-deps --no-build-isolation -e .
    echo "$want" >"$STAMP"
    say "installed requirements.lock (+ constraints.txt) and labelloop (editable); pip log: .venv/$(basename "$LOG")"
fi

"$VENV/bin/python" env/torchvision-cpu/install.py | sed 's/^/setup: /'
# --- browser UI (issue 7): web/ -> src/labelloop/server/web_dist --------------------------------------------
# npm ci runs when package-lock.json changed; the Vite build runs when any source under web/ changed (sha256
# stamps, like pip's above). Node.js >= 20.19 and npm are needed only when something has to be (re)built.
WEB="$ROOT/web"
WEB_DIST="$ROOT/src/labelloop/server/web_dist"
if [[ -d "$WEB" ]]; then
    lock_want="$(cat "$WEB/package.json" "$WEB/package-lock.json" | sha256sum | cut -d' ' -f1)"
    lock_have="$(cat "$WEB/node_modules/.labelloop-npm-ci.sha256" 2>/dev/null || true)"
    web_want="$( (cd "$WEB" && find src test index.html package.json package-lock.json tsconfig.json vite.config.ts \
        -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)"
    web_have="$(cat "$WEB_DIST/.labelloop-build.sha256" 2>/dev/null || true)"
    if [[ "$web_want" == "$web_have" && -f "$WEB_DIST/index.html" && "$lock_want" == "$lock_have" ]]; then
        say "browser UI up to date (web/ unchanged since the last build)"
    else
        if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
            say "node and npm are needed to build the browser UI in web/ (Node.js >= 20.19); install them and re-run" >&2
            exit 1
        fi
        WEB_LOG="$VENV/.labelloop-setup-npm.log"
        : >"$WEB_LOG"
        if [[ "$lock_want" != "$lock_have" ]]; then
            if ! (cd "$WEB" && npm ci --no-audit --no-fund) >>"$WEB_LOG" 2>&1; then
                say "npm ci failed in web/; last lines of $WEB_LOG:" >&2
                tail -n 40 "$WEB_LOG" >&2
                exit 1
            fi
            echo "$lock_want" >"$WEB/node_modules/.labelloop-npm-ci.sha256"
        fi
        if ! (cd "$WEB" && npm run build) >>"$WEB_LOG" 2>&1; then
            say "the browser UI build failed (npm run build in web/); last lines of $WEB_LOG:" >&2
            tail -n 40 "$WEB_LOG" >&2
            exit 1
        fi
        echo "$web_want" >"$WEB_DIST/.labelloop-build.sha256"
        say "built the browser UI into src/labelloop/server/web_dist (npm log: .venv/$(basename "$WEB_LOG"))"
    fi
fi
# --- end of browser UI block ----------------------------------------------------------------------------------

say "done in $((SECONDS - START))s"
