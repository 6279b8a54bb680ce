#!/usr/bin/env bash
# Sets up everything neuralsim needs on a fresh Debian machine: Mitsuba's LLVM, a venv, the package.
set -euo pipefail
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# Mitsuba's LLVM backend aborts on the first render with Debian 12's default LLVM 15; it needs LLVM >= 19.
if ! ls /usr/lib/*/libLLVM*.so.19* /usr/lib/*/libLLVM-19.so* >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "setup: installing libllvm19 for Mitsuba's LLVM backend"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libllvm19 >/dev/null
    else
        echo "setup: warning: libllvm19 is missing and cannot be installed here; Mitsuba will fall back to scalar_rgb" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
    if [ "$(uname -m)" = "x86_64" ]; then
        "$PIP" install -q torch==2.14.1 torchvision==0.29.1
    else
        "$PIP" install -q torch==2.9.1 torchvision==0.24.1
    fi
fi
"$PIP" install -q -e ".[dev]"
