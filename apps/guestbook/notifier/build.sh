#!/bin/sh
# Build the notifier with PyPI spin-sdk 3.4.1 + componentize-py 0.17.2 (world spin-redis), in
# the same venv as apps/spin-python (see its build.sh: componentize-py finds spin-sdk's WIT only
# from that venv, which lives outside the app so that componentize-py does not scan it).
set -e
cd "$(dirname "$0")"
VENV=${SPIN_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/spinhost/venv-spin-sdk-3.4.1}
if [ ! -x "$VENV/bin/componentize-py" ] || [ ! -d "$VENV/lib" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet componentize-py==0.17.2 spin-sdk==3.4.1
fi
PATH="$(cd "$VENV/bin" && pwd):$PATH" componentize-py -w spin-redis componentize app -o notifier.wasm
