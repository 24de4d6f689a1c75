#!/usr/bin/env bash
# Installs what edlm-engine needs, on a fresh machine or an existing one, then builds the extension.
# torch is installed only when absent (2.13.0: the local CPU build); a present torch (e.g. a CUDA build) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q torch==2.13.0
fi
"$PY" -m pip install -q "setuptools>=77" wheel ninja  # 77: the plain-string license in pyproject.toml
# Without build isolation the build compiles against the installed torch instead of downloading another.
"$PY" -m pip install -q --no-build-isolation -e ".[test,plot]"
