"""host/oci: app-only OCI images, checked with the standard tools and a real registry.

Layouts are read by `skopeo` and `umoci`; push and pull go to Debian's
`docker-registry` on a loopback port (tests/oci_registry.py), with a login
proxy in front of it for the auth flows. Tampering is done the hard way: bytes
flipped in a layout's blob files and in the registry's own storage.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from host.capabilities.files import stage_files
from host.cli import main as cli_main
from host.errors import ConfigError, OciError
from host.limits import OciLimits
from host.manifest import load_manifest
from host.oci.image import build_image
from host.oci.layout import LocalLayout
from host.oci.registry import RegistryClient, parse_reference, pull, push
from host.oci.spec import MEDIA_LAYER_GZIP, MEDIA_MANIFEST, Descriptor, canonical_json
from host.oci.store import resolve_app
from host.oci.writer import LayoutWriter
from tests.conftest import HostProcess, run_host, write_app
from tests.loopback import free_port
from tests.oci_registry import (  # noqa: F401 - oci_registry_fixture provides `oci_registry`
    INSTALL_HINT,
    AuthProxy,
    Registry,
    oci_registry_fixture,
)
from tests.test_bundle import Bundled

MANIFEST = """spin_manifest_version = 2
[application]
name = "tiny"
version = "0.1.0"
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
files = ["static/**/*", { source = "assets", destination = "/data" }]
exclude_files = ["**/*.bak"]
"""

MakeApp = Callable[..., Path]

EXPECTED_FILES = ("assets/data.txt", "spin.toml", "static/index.html", "static/sub/page.html",
                  "web.wasm")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install it: {INSTALL_HINT}", pytrace=False)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, text=True, capture_output=True, timeout=120)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def make_app(tmp_path: Path, wat_components: dict[str, Path]) -> MakeApp:
    """`make_app(name, marker)`: a tiny app whose content (and digests) depend on `marker`."""

    def make(name: str = "app", marker: str = "") -> Path:
        app = tmp_path / name
        write_app(app, MANIFEST, {"web.wasm": wat_components["fixed"]})
        for rel, text in {"static/index.html": f"<h1>hi {marker}</h1>",
                          "static/sub/page.html": "page", "static/old.bak": "excluded",
                          "assets/data.txt": "data", ".spin/state.db": "state",
                          "src/lib.rs": "source"}.items():
            (app / rel).parent.mkdir(parents=True, exist_ok=True)
            (app / rel).write_text(text)
        return app

    return make


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def flip_byte(path: Path, offset: int = -1) -> None:
    """Change one byte, keeping the length (what a registry's size check would not see)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def layer_of(layout: Path) -> Descriptor:
    with LocalLayout(layout) as source:
        return source.manifest().layers[0]


def oci_main(*argv: str) -> int:
    """`host oci ...` in this process, through the real CLI parser."""
    return cli_main(["oci", *argv])


# ---------------------------------------------------------------------------
# build


def test_build_is_reproducible_and_holds_only_the_app(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    first = build_image(app, tmp_path / "one")
    second = build_image(app / "spin.toml", tmp_path / "two")
    assert first.manifest_digest == second.manifest_digest
    assert first.layer_digest == second.layer_digest
    assert first.files == EXPECTED_FILES
    for digest in (first.manifest_digest, first.config_digest, first.layer_digest):
        assert blob_path(tmp_path / "one", digest).read_bytes() == \
            blob_path(tmp_path / "two", digest).read_bytes()
    assert first.total_size == sum(p.stat().st_size for p in
                                   (tmp_path / "one" / "blobs" / "sha256").iterdir())
    layer = blob_path(tmp_path / "one", first.layer_digest).read_bytes()
    assert len(layer) == first.layer_size
    assert layer[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        members = tar.getmembers()
        packed = tar.extractfile("spin.toml")
        assert packed is not None and packed.read() == (app / "spin.toml").read_bytes()
    names = [m.name for m in members]
    assert names == ["assets", "assets/data.txt", "spin.toml", "static", "static/index.html",
                     "static/sub", "static/sub/page.html", "web.wasm"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)
    config = json.loads(blob_path(tmp_path / "one", first.config_digest).read_bytes())
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")
    manifest = json.loads(blob_path(tmp_path / "one", first.manifest_digest).read_bytes())
    assert manifest["annotations"] == {"org.opencontainers.image.title": "tiny",
                                       "org.opencontainers.image.version": "0.1.0"}
    index = json.loads((tmp_path / "one" / "index.json").read_text())
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "latest"}


def test_tar_output_is_the_same_image(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    as_dir = build_image(app, tmp_path / "layout", tag="v1")
    as_tar = build_image(app, tmp_path / "image.tar", tag="v1")
    build_image(app, tmp_path / "again.tar", tag="v1")
    assert as_tar.manifest_digest == as_dir.manifest_digest
    assert (tmp_path / "image.tar").read_bytes() == (tmp_path / "again.tar").read_bytes()
    with tarfile.open(tmp_path / "image.tar") as tar:
        assert {"oci-layout", "index.json"} <= set(tar.getnames())
    result = run(tool("skopeo"), "inspect", f"oci-archive:{tmp_path / 'image.tar'}:v1")
    assert json.loads(result.stdout)["Digest"] == as_tar.manifest_digest


def test_skopeo_reads_and_copies_the_layout(make_app: MakeApp, tmp_path: Path) -> None:
    info = build_image(make_app(), tmp_path / "layout")
    skopeo = tool("skopeo")
    inspected = json.loads(run(skopeo, "inspect", f"oci:{tmp_path / 'layout'}:latest").stdout)
    assert inspected["Digest"] == info.manifest_digest
    assert (inspected["Architecture"], inspected["Os"]) == ("wasm", "wasip1")
    assert inspected["Layers"] == [info.layer_digest]
    run(skopeo, "copy", "-q", f"oci:{tmp_path / 'layout'}:latest",
        f"oci:{tmp_path / 'copy'}:latest")
    with LocalLayout(tmp_path / "copy") as copy:  # and we read what skopeo wrote
        assert copy.manifest().digest == info.manifest_digest


def test_umoci_unpacks_it(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    umoci = tool("umoci")
    build_image(app, tmp_path / "wasm")
    # umoci makes runtime bundles (config.json) for linux images only; the rootfs of
    # Spin's wasip1/wasm image unpacks all the same.
    run(umoci, "raw", "unpack", "--rootless", "--image", f"{tmp_path / 'wasm'}:latest",
        str(tmp_path / "rootfs"))
    assert (tmp_path / "rootfs" / "spin.toml").read_bytes() == (app / "spin.toml").read_bytes()
    build_image(app, tmp_path / "linux", platform="linux/amd64")
    run(umoci, "unpack", "--rootless", "--image", f"{tmp_path / 'linux'}:latest",
        str(tmp_path / "bundle"))
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (tmp_path / "bundle" / "config.json").is_file()
    assert (rootfs / "spin.toml").read_bytes() == (app / "spin.toml").read_bytes()
    assert (rootfs / "web.wasm").read_bytes() == (app / "web.wasm").read_bytes()
    assert not (rootfs / ".spin").exists() and not (rootfs / "src").exists()


def test_output_replaces_a_layout_but_never_other_data(make_app: MakeApp,
                                                       tmp_path: Path) -> None:
    app = make_app()
    build_image(app, tmp_path / "layout", tag="old")
    info = build_image(app, tmp_path / "layout", tag="new")
    with LocalLayout(tmp_path / "layout") as layout:
        assert layout.tags() == ["new"] and layout.manifest().digest == info.manifest_digest
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(OciError, match="not an OCI image layout; refusing to replace it"):
        build_image(app, tmp_path / "docs")
    assert os.listdir(tmp_path / "docs") == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "docs", "layout"]


def test_source_outside_the_app_dir_is_refused(tmp_path: Path,
                                               wat_components: dict[str, Path]) -> None:
    shutil.copy(wat_components["fixed"], tmp_path / "outside.wasm")
    app = tmp_path / "app"
    write_app(app, MANIFEST.split("files =")[0].replace('"web.wasm"', '"../outside.wasm"'))
    with pytest.raises(ConfigError) as err:
        build_image(app, tmp_path / "out")
    message = str(err.value)
    assert "[component.web] source" in message and "../outside.wasm" in message
    assert "outside the app directory" in message and str(app / "spin.toml") in message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_runtime_config_and_mapped_files_resolve_the_same_after_unpacking(
        make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    (tmp_path / "rc.toml").write_text('[key_value_store.default]\ntype = "spin"\n')
    info = build_image(app, tmp_path / "layout", runtime_config=tmp_path / "rc.toml")
    assert "runtime-config.toml" in info.files
    resolved = resolve_app(str(tmp_path / "layout"), tmp_path / "cache")
    assert resolved.runtime_config is not None
    assert resolved.runtime_config.read_bytes() == (tmp_path / "rc.toml").read_bytes()
    original, unpacked = load_manifest(app), load_manifest(resolved.manifest_path)
    trees = []
    for manifest, root in ((original, tmp_path / "g1"), (unpacked, tmp_path / "g2")):
        stage_files(manifest, manifest.components["web"], root)
        trees.append({p.relative_to(root).as_posix(): p.read_bytes()
                      for p in root.rglob("*") if p.is_file()})
    assert trees[0] == trees[1] == {"static/index.html": b"<h1>hi </h1>",
                                    "static/sub/page.html": b"page", "data/data.txt": b"data"}


def test_symlinks_inside_the_app_are_packed_as_the_files_they_name(make_app: MakeApp,
                                                                    tmp_path: Path) -> None:
    app = make_app()
    (app / "static" / "alias.txt").symlink_to("../assets/data.txt")
    info = build_image(app, tmp_path / "layout")
    assert "static/alias.txt" in info.files
    unpacked = resolve_app(str(tmp_path / "layout"), tmp_path / "cache").manifest_path.parent
    alias = unpacked / "static" / "alias.txt"
    assert not alias.is_symlink() and alias.read_text() == "data"


def test_a_files_entry_removed_by_exclude_files_is_refused(make_app: MakeApp,
                                                          tmp_path: Path) -> None:
    app = make_app()
    text = (app / "spin.toml").read_text()
    (app / "spin.toml").write_text(text.replace('"**/*.bak"', '"**/*.bak", "assets"'))
    with pytest.raises(ConfigError, match='files entry "assets" is removed by exclude_files'):
        build_image(app, tmp_path / "layout")


# ---------------------------------------------------------------------------
# local layouts: resolve, verify, unpack safely


def test_resolve_app_from_layout_dir_and_tar(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    info = build_image(app, tmp_path / "layout", tag="v2")
    build_image(app, tmp_path / "image.tar", tag="v2")
    cache = tmp_path / "cache"
    from_dir = resolve_app(str(tmp_path / "layout"), cache)
    from_tar = resolve_app(f"{tmp_path / 'image.tar'}:v2", cache)
    assert from_dir.digest == from_tar.digest == info.manifest_digest
    assert from_dir.manifest_path == from_tar.manifest_path == \
        cache / "oci" / "apps" / info.manifest_digest.removeprefix("sha256:") / "spin.toml"
    assert from_dir.source == str((tmp_path / "layout").resolve())
    unpacked = from_dir.manifest_path.parent
    assert sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")
                  if p.is_file()) == list(EXPECTED_FILES)
    with pytest.raises(OciError, match="no image tagged 'v3'; tags: v2"):
        resolve_app(f"{tmp_path / 'layout'}:v3", cache)


@pytest.mark.parametrize(("limits", "message"), [
    (OciLimits(max_manifest_bytes=100), "is larger than 100 bytes"),
    (OciLimits(max_unpacked_entries=2), "unpacks to more than .* or 2 entries"),
    (OciLimits(max_unpacked_bytes=10), "unpacks to more than 10 bytes"),
])
def test_oci_limits_apply(make_app: MakeApp, tmp_path: Path, limits: OciLimits,
                          message: str) -> None:
    build_image(make_app(), tmp_path / "layout")
    with pytest.raises(OciError, match=message):
        resolve_app(str(tmp_path / "layout"), tmp_path / "cache", limits=limits)
    assert not (tmp_path / "cache" / "oci" / "apps").exists() or not any(
        p for p in (tmp_path / "cache" / "oci" / "apps").iterdir() if not p.name.startswith("."))


def test_registry_timeouts_come_from_oci_limits() -> None:
    limits = OciLimits(connect_timeout_seconds=1.5, read_timeout_seconds=2.5,
                       write_timeout_seconds=3.5, pool_timeout_seconds=4.5)
    with RegistryClient(parse_reference("localhost:5000/apps/x:v1"), limits=limits) as client:
        timeout = client._client.timeout
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (1.5, 2.5, 3.5, 4.5)


def test_concurrent_resolves_share_one_unpacked_copy(make_app: MakeApp, tmp_path: Path) -> None:
    build_image(make_app(), tmp_path / "layout")
    results: list[Path] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(resolve_app(str(tmp_path / "layout"), tmp_path / "cache").manifest_path)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert os.listdir(tmp_path / "cache" / "oci" / "apps") == [results[0].parent.name]


def test_tampered_blob_in_a_local_layout_is_refused(make_app: MakeApp, tmp_path: Path) -> None:
    info = build_image(make_app(), tmp_path / "layout")
    flip_byte(blob_path(tmp_path / "layout", info.layer_digest), offset=100)
    with pytest.raises(OciError) as err:
        resolve_app(str(tmp_path / "layout"), tmp_path / "cache")
    assert f"blob {info.layer_digest} does not match its digest" in str(err.value)
    assert "tampered" in str(err.value)
    assert not (tmp_path / "cache" / "oci" / "apps").exists() or \
        not os.listdir(tmp_path / "cache" / "oci" / "apps")
    with pytest.raises(OciError, match=info.layer_digest):
        push(tmp_path / "layout", "127.0.0.1:1/never/sent:v1")  # refused before connecting


def _layout_with_layer(out: Path, entries: list[tarfile.TarInfo]) -> Path:
    """A layout whose single layer holds `entries` (plus a spin.toml), however hostile."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        manifest = b"spin_manifest_version = 2\n"
        info = tarfile.TarInfo("spin.toml")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for entry in entries:
            tar.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isreg() else None)
    with LayoutWriter(out) as writer:
        layer = writer.add_blob(gzip.compress(raw.getvalue()), MEDIA_LAYER_GZIP)
        config = writer.add_blob(b"{}", "application/vnd.oci.image.config.v1+json")
        image = writer.add_blob(canonical_json({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config.to_json(),
            "layers": [layer.to_json()]}), MEDIA_MANIFEST)
        writer.commit([image])
    return out


def _entry(name: str, kind: bytes = tarfile.REGTYPE, size: int = 1,
           link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info


@pytest.mark.parametrize(("entry", "message"), [
    (_entry("../x"), "leaving the app directory ('../x')"),
    (_entry("static/../../x"), "leaving the app directory"),
    (_entry("/etc/passwd"), "absolute path '/etc/passwd'"),
    (_entry("link", tarfile.SYMTYPE, link="/etc/passwd"), "'link' is a symbolic link"),
    (_entry("hard", tarfile.LNKTYPE, link="spin.toml"), "'hard' is a hard link"),
    (_entry("dev", tarfile.CHRTYPE), "'dev' is a device"),
    (_entry("fifo", tarfile.FIFOTYPE), "'fifo' is a FIFO"),
])
def test_unpack_refuses_entries_that_could_escape(tmp_path: Path, entry: tarfile.TarInfo,
                                                  message: str) -> None:
    layout = _layout_with_layer(tmp_path / "layout", [entry])
    cache = tmp_path / "cache"
    with pytest.raises(OciError) as err:
        resolve_app(str(layout), cache)
    assert message in str(err.value) and layer_of(layout).digest in str(err.value)
    assert not (tmp_path / "x").exists()
    assert os.listdir(cache / "oci" / "apps") == []  # the temporary tree is gone too


# ---------------------------------------------------------------------------
# registry


def test_push_pull_round_trip(make_app: MakeApp, tmp_path: Path, oci_registry: Registry) -> None:
    info = build_image(make_app(marker="round-trip"), tmp_path / "layout")
    ref = f"{oci_registry.address}/apps/tiny:v1"
    first = push(tmp_path / "layout", ref)
    assert first.digest == info.manifest_digest and first.uploaded == 2
    assert push(tmp_path / "layout", ref).present == 2  # nothing sent twice
    assert pull(ref, tmp_path / "pulled") == info.manifest_digest
    for digest in (info.manifest_digest, info.config_digest, info.layer_digest):
        assert blob_path(tmp_path / "pulled", digest).read_bytes() == \
            blob_path(tmp_path / "layout", digest).read_bytes()
    # A standard client reads what we pushed, by tag and by digest.
    inspected = json.loads(run(tool("skopeo"), "inspect", "--tls-verify=false",
                               f"docker://{ref}").stdout)
    assert inspected["Digest"] == info.manifest_digest and inspected["Os"] == "wasip1"
    pinned = f"{oci_registry.address}/apps/tiny@{info.manifest_digest}"
    assert pull(pinned, tmp_path / "pinned") == info.manifest_digest


def test_resolve_app_from_registry_then_serve(make_app: MakeApp, tmp_path: Path,
                                             oci_registry: Registry, cache_dir: Path) -> None:
    info = build_image(make_app(marker="serve"), tmp_path / "layout")
    ref = f"{oci_registry.address}/apps/serve:v1"
    push(tmp_path / "layout", ref)
    cache = tmp_path / "cache"
    resolved = resolve_app(ref, cache)
    assert (resolved.digest, resolved.source) == (info.manifest_digest, ref)
    hex_ = info.manifest_digest.removeprefix("sha256:")
    assert resolved.manifest_path == cache / "oci" / "apps" / hex_ / "spin.toml"
    assert sorted(os.listdir(cache / "oci" / "blobs" / "sha256")) == sorted(
        d.removeprefix("sha256:") for d in (info.manifest_digest, info.config_digest,
                                            info.layer_digest))
    # Pinned by digest and already unpacked: no registry needed (port 1 answers nothing).
    offline = resolve_app(f"127.0.0.1:1/apps/serve@{info.manifest_digest}", cache)
    assert offline.manifest_path == resolved.manifest_path
    with HostProcess(["-f", str(resolved.manifest_path), "--cache-dir", str(cache_dir),
                      "--state-dir", str(tmp_path / "state")]) as host:
        with host.client() as client:
            assert client.get("/").text == "fixed response"


def test_tampered_blob_in_the_registry_is_refused(make_app: MakeApp, tmp_path: Path,
                                                 oci_registry: Registry) -> None:
    info = build_image(make_app(marker="tamper-blob"), tmp_path / "layout")
    ref = f"{oci_registry.address}/apps/tamper-blob:v1"
    push(tmp_path / "layout", ref)
    flip_byte(oci_registry.blob_file(info.layer_digest), offset=200)
    cache = tmp_path / "cache"
    with pytest.raises(OciError) as err:
        resolve_app(ref, cache)
    assert f"blob {info.layer_digest} does not match its digest" in str(err.value)
    assert not (cache / "oci" / "apps").exists() or os.listdir(cache / "oci" / "apps") == []
    blobs = cache / "oci" / "blobs" / "sha256"
    assert info.layer_digest.removeprefix("sha256:") not in os.listdir(blobs)
    assert not [name for name in os.listdir(blobs) if ".tmp-" in name]
    with pytest.raises(OciError, match=info.layer_digest):
        pull(ref, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled")]


def test_tampered_manifest_in_the_registry_is_refused(make_app: MakeApp, tmp_path: Path,
                                                     oci_registry: Registry) -> None:
    info = build_image(make_app(marker="tamper-manifest"), tmp_path / "layout")
    ref = f"{oci_registry.address}/apps/tamper-manifest:v1"
    push(tmp_path / "layout", ref)
    stored = oci_registry.blob_file(info.manifest_digest)
    stored.write_bytes(stored.read_bytes().replace(b'"tiny"', b'"tinx"'))  # still valid JSON
    with pytest.raises(OciError) as err:
        resolve_app(ref, tmp_path / "cache")
    assert f"not {info.manifest_digest}" in str(err.value) and "tampered" in str(err.value)
    assert not (tmp_path / "cache" / "oci" / "apps").exists()


def test_unknown_tag_is_a_clear_one_line_error(oci_registry: Registry, tmp_path: Path) -> None:
    ref = f"{oci_registry.address}/apps/nothing-here:v9"
    with pytest.raises(OciError) as err:
        pull(ref, tmp_path / "out")
    assert str(err.value).startswith(f"{ref}: not found in the registry")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    # Through the command line: exit 1, one line on stderr, no traceback.
    script = ("import argparse, sys\n"
              "from host.errors import HostError\n"
              "from host.oci.cli import add_parser\n"
              "p = argparse.ArgumentParser(prog='host'); add_parser(p.add_subparsers())\n"
              "args = p.parse_args(sys.argv[1:])\n"
              "try:\n    sys.exit(args.run(args))\n"
              "except HostError as exc:\n"
              "    print(f'Error: {exc}', file=sys.stderr); sys.exit(exc.exit_code)\n")
    result = subprocess.run([sys.executable, "-c", script, "oci", "pull", ref, "--cache-dir",
                             str(tmp_path / "cache")], text=True, capture_output=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {ref}: not found in the registry")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OciError, match="127.0.0.1:1: cannot reach the registry"):
        pull("127.0.0.1:1/apps/x:v1", tmp_path / "out")


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_login(make_app: MakeApp, tmp_path: Path, oci_registry: Registry, scheme: str,
               monkeypatch: pytest.MonkeyPatch) -> None:
    info = build_image(make_app(marker=f"auth-{scheme}"), tmp_path / "layout")
    with AuthProxy(oci_registry.address, scheme, "alice", "s3cret") as proxy:
        ref = f"{proxy.address}/apps/auth-{scheme}:v1"
        with pytest.raises(OciError, match="requires a login|refused anonymous"):
            push(tmp_path / "layout", ref)
        with pytest.raises(OciError, match="refused the login|authentication failed"):
            push(tmp_path / "layout", ref, username="alice", password="wrong")
        assert push(tmp_path / "layout", ref, username="alice",
                    password="s3cret").digest == info.manifest_digest
        monkeypatch.setenv("SPINHOST_REGISTRY_USERNAME", "alice")
        monkeypatch.setenv("SPINHOST_REGISTRY_PASSWORD", "s3cret")
        assert pull(ref, tmp_path / "pulled") == info.manifest_digest
        if scheme == "bearer":
            assert any("service=test-registry" in q and "pull%2Cpush" in q
                       for q in proxy.token_requests)


# ---------------------------------------------------------------------------
# references and the command line


@pytest.mark.parametrize(("text", "parts"), [
    ("localhost:5000/app", ("localhost:5000", "app", "latest", None)),
    ("127.0.0.1:5000/team/app:v1.2", ("127.0.0.1:5000", "team/app", "v1.2", None)),
    ("[::1]:5000/app@sha256:" + "a" * 64, ("[::1]:5000", "app", None, "sha256:" + "a" * 64)),
    ("ghcr.io/org/my-app:1.0@sha256:" + "b" * 64,
     ("ghcr.io", "org/my-app", "1.0", "sha256:" + "b" * 64)),
])
def test_references(text: str, parts: tuple[str, str, str | None, str | None]) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == parts
    assert str(ref) == (text if ":" in text.rpartition("/")[2] or "@" in text
                        else f"{text}:latest")


def test_plain_http_only_for_loopback_or_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def base(text: str, insecure: bool | None = None, remote: bool | None = None) -> str:
        with RegistryClient(parse_reference(text), insecure,
                            allow_insecure_remote=remote) as client:
            return client.base

    monkeypatch.delenv("SPINHOST_ALLOW_INSECURE_REMOTE", raising=False)
    assert base("ghcr.io/org/app:v1") == "https://ghcr.io/v2/org/app"
    # --insecure alone reaches only this machine; another host needs the second flag.
    with pytest.raises(OciError, match="only for loopback.*--allow-insecure-remote"):
        base("registry.internal:5000/app", insecure=True)
    assert base("registry.internal:5000/app", insecure=True, remote=True) == \
        "http://registry.internal:5000/v2/app"
    monkeypatch.setenv("SPINHOST_ALLOW_INSECURE_REMOTE", "1")
    assert base("registry.internal:5000/app", insecure=True).startswith("http://")
    for loopback in ("localhost:5000", "127.0.0.1:5000", "127.0.0.2:5000", "[::1]:5000"):
        assert base(f"{loopback}/app").startswith(f"http://{loopback}/")
        assert base(f"{loopback}/app", insecure=True).startswith(f"http://{loopback}/")
    assert base("localhost:5000/app", insecure=False).startswith("https://")


@pytest.mark.parametrize("text", ["app", "./app.tar", "localhost:5000/App", "host/app:-bad",
                                  "host/app@sha256:xyz", "host/"])
def test_bad_references(text: str) -> None:
    with pytest.raises(OciError, match="not a registry reference|invalid|unsupported digest"):
        parse_reference(text)


def test_cli_build_push_pull(make_app: MakeApp, tmp_path: Path, oci_registry: Registry,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(marker="cli")
    out = tmp_path / "image.tar"
    assert oci_main("build", "-f", str(app), "-o", str(out), "--tag", "v3") == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{out}:v3 sha256:") and "5 files" in line
    digest = line.split()[1]
    ref = f"{oci_registry.address}/apps/cli:v3"
    monkeypatch.setattr(sys, "stdin", io.StringIO("ignored-by-an-anonymous-registry\n"))
    assert oci_main("push", str(out), ref, "-u", "nobody", "--password-stdin") == 0
    assert capsys.readouterr().out.startswith(f"pushed {ref} {digest} (")
    assert oci_main("pull", ref, "-o", str(tmp_path / "pulled")) == 0
    assert capsys.readouterr().out.startswith(f"pulled {ref} {digest} -> {tmp_path / 'pulled'}")
    assert oci_main("pull", ref, "--cache-dir", str(tmp_path / "cache")) == 0
    hex_ = digest.removeprefix("sha256:")
    assert capsys.readouterr().out.strip().endswith(f"{hex_}/spin.toml")
    assert oci_main("build", "-f", str(tmp_path / "missing"), "-o", str(tmp_path / "x")) == 1
    assert oci_main() == 2  # `host oci` alone: usage
    assert "build" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The whole path through the real CLI: build -> push -> `host up -f REF` -> curl


def test_build_push_and_serve_from_the_registry(make_app: MakeApp, tmp_path: Path,
                                                oci_registry: Registry,
                                                cache_dir: Path) -> None:
    layout, ref = tmp_path / "layout", f"{oci_registry.address}/apps/web:1.0"
    built = run_host("oci", "build", "-f", str(make_app(marker="cli")), "-o", str(layout))
    assert built.returncode == 0, built.stderr
    pushed = run_host("oci", "push", str(layout), ref)
    assert pushed.returncode == 0, pushed.stderr
    with LocalLayout(layout) as source:
        digest = source.manifest().digest
    oci_cache = tmp_path / "node-cache"
    shutil.copytree(cache_dir, oci_cache)  # compiled components: the warm node
    with HostProcess(["-f", ref, "--cache-dir", str(oci_cache)]) as host, host.client() as c:
        assert c.get("/").text == "fixed response"
        info = c.get("/.well-known/spin/info").json()
        assert info["oci_image_digest"] == digest
        assert f"Serving OCI image {ref} ({digest})" in host.output
    app_dir = oci_cache / "oci" / "apps" / digest.removeprefix("sha256:")
    assert not (app_dir / ".spin").exists()  # registry apps keep no state dir (Spin)
    with HostProcess(["-f", str(layout), "--cache-dir", str(oci_cache)]) as host, \
            host.client() as c:
        assert c.get("/").text == "fixed response"
    refused = run_host("up", "-f", str(layout), "--build", "--listen", "127.0.0.1:0")
    assert refused.returncode == 1 and "is an OCI image, not sources" in refused.stderr


def test_umoci_bundle_is_served_by_run_bundle(make_app: MakeApp, tmp_path: Path,
                                             cache_dir: Path) -> None:
    """What a containerd shim does: unpack the image into a bundle, start the host on it."""
    build_image(make_app(), tmp_path / "image", platform="linux/amd64")
    bundle = tmp_path / "bundle"
    run(tool("umoci"), "unpack", "--rootless", "--image", f"{tmp_path / 'image'}:latest",
        str(bundle))
    spec = json.loads((bundle / "config.json").read_text())
    port = free_port()
    spec["process"]["env"] += [f"SPIN_HTTP_LISTEN_ADDR=127.0.0.1:{port}",
                               f"SPINHOST_CACHE_DIR={cache_dir}"]
    (bundle / "config.json").write_text(json.dumps(spec))
    host = Bundled(bundle)
    try:
        host.wait_serving()
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "fixed response"
    finally:
        assert host.stop() == 0
