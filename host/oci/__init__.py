"""App-only OCI images: build them without Docker, move them through registries, run them.

An image holds one gzip tar layer with the app directory as its root
(`/spin.toml`, the component `.wasm` files, the files components may read,
optionally `/runtime-config.toml`): the shape containerd-shim-spin loads from
an ordinary container image, so Kubernetes can ship spinhost apps as images.

- `image.py`: app -> OCI image layout (directory or `.tar`), reproducibly.
- `layout.py`: media types, digests, reading and writing image layouts.
- `registry.py`: the OCI distribution API (push, pull, auth).
- `store.py`: a reference or layout -> a verified, unpacked app on disk.
- `cli.py`: `host oci build | push | pull`.

Every blob is checked against its sha256 digest wherever it comes from; a
mismatch is refused before anything reaches its destination.
"""

from __future__ import annotations

from host.errors import HostError


class OciError(HostError):
    """An image, layout or registry problem: tampered blob, unknown tag, refused login..."""
