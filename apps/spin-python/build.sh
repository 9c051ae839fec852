#!/bin/sh
# Build apps/spin-python with PyPI spin-sdk 3.4.1 + componentize-py 0.17.2 (world spin-http).
# componentize-py finds spin-sdk's WIT (spin_sdk/componentize-py.toml) only when it runs from
# the venv that holds spin-sdk, i.e. with that venv's bin first on PATH. That venv lives
# outside the app directory: componentize-py scans the app directory for Python modules and
# would pick up a venv inside it.
set -e
cd "$(dirname "$0")"
VENV=${SPIN_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/spinhost/venv-spin-sdk-3.4.1}
if [ ! -x "$VENV/bin/componentize-py" ] || [ ! -d "$VENV/lib" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet componentize-py==0.17.2 spin-sdk==3.4.1
fi
PATH="$(cd "$VENV/bin" && pwd):$PATH" componentize-py -w spin-http componentize app -o spin-python.wasm
