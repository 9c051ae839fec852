#!/bin/sh
# Build apps/spin-redis-python with PyPI spin-sdk 3.4.1 + componentize-py 0.17.2 (world spin-redis),
# in the same venv as apps/spin-python (see its build.sh for why it lives outside the app).
set -e
cd "$(dirname "$0")"
VENV=${SPIN_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/spinhost/venv-spin-sdk-3.4.1}
if [ ! -x "$VENV/bin/componentize-py" ] || [ ! -d "$VENV/lib" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet componentize-py==0.17.2 spin-sdk==3.4.1
fi
PATH="$(cd "$VENV/bin" && pwd):$PATH" componentize-py -w spin-redis componentize app -o spin-redis-python.wasm
