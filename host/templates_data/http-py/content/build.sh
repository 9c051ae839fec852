#!/bin/sh
# Build app.wasm with the Spin SDK for Python (requirements.txt: spin-sdk + componentize-py,
# world spin-http). componentize-py finds spin-sdk's WIT only when it runs from the venv that
# holds spin-sdk, so that venv's bin goes first on PATH. The venv lives outside this directory
# (componentize-py bundles what it finds here) and is shared by every app with the same
# requirements.txt: ~/.cache/spinhost/venv-spin-sdk-<hash of requirements.txt>.
set -e
cd "$(dirname "$0")"
HASH=$(python3 -c 'import hashlib; print(hashlib.sha256(open("requirements.txt", "rb").read()).hexdigest()[:12])')
VENV=${SPIN_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/spinhost/venv-spin-sdk-$HASH}
if [ ! -x "$VENV/bin/componentize-py" ] || [ ! -f "$VENV/.requirements-installed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r requirements.txt
  cp requirements.txt "$VENV/.requirements-installed"
fi
PATH="$(cd "$VENV/bin" && pwd):$PATH" componentize-py -w spin-http componentize app -o app.wasm
