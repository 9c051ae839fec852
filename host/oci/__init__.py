"""App-only OCI images: build them without Docker, move them through registries, run them.

An image holds one gzip tar layer with the app directory as its root
(`/spin.toml`, the component `.wasm` files, the files components may read,
optionally `/runtime-config.toml`): the shape containerd-shim-spin loads from
an ordinary container image, so Kubernetes can ship spinhost apps as images.

- `spec.py`: media types, descriptors, manifests and indexes (parsing, no I/O).
- `digest.py`: sha256 digests; blobs checked against their descriptor as they pass.
- `archive.py`: reproducible tar and gzip.
- `atomic.py`: temporary names renamed into place; OS errors as `OciError`.
- `layout.py`: reading an image layout (directory or `.tar`), every blob verified.
- `writer.py`: writing an image layout atomically.
- `image.py`: app -> OCI image layout (directory or `.tar`), reproducibly.
- `registry.py`: the OCI distribution API (push, pull, login; Basic and Bearer auth).
- `credentials.py`: registry logins: ours (saved by `host registry login`) and Docker's.
- `store.py`: a reference or layout -> a verified, unpacked app on disk.
- `cli.py`: `host oci build | push | pull`, `host registry push | pull | login | logout`.

Every blob is checked against its sha256 digest wherever it comes from; a
mismatch is refused before anything reaches its destination. Failures are
`host.errors.OciError`; size caps and registry timeouts are
`host.limits.OciLimits`.
"""
