"""apps/blob-python (componentize-py, wasi:http/proxy + wasi:blobstore@0.2.0-draft) served by
a real `host up`, with the same checks against both backends: the embedded
file_system store and an S3 bucket on a real moto_server (tests/s3_server.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest

from host.backends.blob_files import encode_name
from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, start_s3

pytestmark = pytest.mark.toolchain
MiB = 1024 * 1024
MANIFEST = """spin_manifest_version = 2
[application]
name = "blobs"
[[trigger.http]]
route = "/..."
component = "blobs"
[component.blobs]
source = "blob-python.wasm"
blob_containers = ["default", "other"]
"""


def s3_runtime_config(endpoint: str, bucket: str) -> str:
    return f"""[blob_store.default]
type = "s3"
region = "{REGION}"
bucket = "{bucket}"
endpoint = "{endpoint}"
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
"""


def make_bucket(endpoint: str, bucket: str) -> None:
    botocore.session.get_session().create_client(
        "s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY).create_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def wasm() -> Path:
    return built_app("blob-python") / "blob-python.wasm"


def start_host(directory: Path, wasm: Path, cache_dir: Path, runtime_config: str | None = None,
               *extra: str) -> HostProcess:
    app = write_app(directory, MANIFEST, {"blob-python.wasm": wasm})
    args = ["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1", *extra]
    if runtime_config is not None:
        (directory / "runtime-config.toml").write_text(runtime_config)
        args += ["--runtime-config-file", str(directory / "runtime-config.toml")]
    return HostProcess(args).start()


@pytest.fixture(scope="module", params=["file_system", "s3"])
def host(request: pytest.FixtureRequest, wasm: Path, cache_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, HostProcess, Path]]:
    directory = tmp_path_factory.mktemp(f"blob-{request.param}")
    config = None
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        make_bucket(server.endpoint, "e2e-default")
        config = s3_runtime_config(server.endpoint, "e2e-default")
    with start_host(directory, wasm, cache_dir, config) as process:
        yield request.param, process, directory


def test_a_multi_mib_object_streams_in_and_out_with_ranges(
        host: tuple[str, HostProcess, Path]) -> None:
    _, process, _ = host
    data = os.urandom(6 * MiB + 99)
    with process.client() as client:
        def chunks() -> Iterator[bytes]:
            for i in range(0, len(data), 256 * 1024):
                yield data[i:i + 256 * 1024]
        stored = client.put("/object", params={"name": "big.bin"}, content=chunks(),
                            timeout=60)
        assert stored.status_code == 200, stored.text
        assert stored.json() == {"stored": "big.bin", "size": len(data)}
        whole = client.get("/object", params={"name": "big.bin"}, timeout=60)
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).digest() == hashlib.sha256(data).digest()
        assert whole.headers["x-blob-size"] == str(len(data))
        part = client.get("/object", params={"name": "big.bin", "start": 5 * MiB,
                                             "end": 5 * MiB + 999})
        assert part.content == data[5 * MiB:5 * MiB + 1000]
        info = client.get("/object/info", params={"name": "big.bin"}).json()
        assert info["has"] and info["info"]["size"] == len(data)
        assert info["info"]["container"] == "default"
        too_big = client.get("/object/sync", params={"name": "big.bin"})
        assert too_big.status_code == 409
        assert "incoming-value-consume-async" in too_big.json()["error"]


def test_listing_pages_deletes_and_copies(host: tuple[str, HostProcess, Path]) -> None:
    _, process, _ = host
    with process.client() as client:
        assert client.post("/clear").status_code == 200
        names = [f"list/{i:02d}" for i in range(7)]
        for name in names:
            assert client.put("/object", params={"name": name}, content=name).status_code == 200
        listing = client.get("/list", params={"page": 3}).json()
        assert [len(p) for p in listing["pages"]] == [3, 3, 1]
        assert sorted(n for p in listing["pages"] for n in p) == names
        skipped = client.get("/list", params={"page": 10, "skip": 5}).json()
        assert skipped["skipped"] == 5 and len(skipped["pages"][0]) == 2
        assert client.delete("/object", params={"name": "list/00"}).status_code == 200
        deleted = client.post("/objects/delete", content="list/01\nlist/02\n")
        assert deleted.status_code == 200
        copied = client.post("/copy", params={"from": "default/list/03", "to": "other/c3"})
        assert copied.status_code == 200, copied.text
        moved = client.post("/move", params={"from": "default/list/04", "to": "other/m4"})
        assert moved.status_code == 200, moved.text
        left = client.get("/list").json()["pages"]
        assert sorted(n for p in left for n in p) == ["list/03", "list/05", "list/06"]
        other = client.get("/list", params={"container": "other"}).json()["pages"]
        assert sorted(n for p in other for n in p) == ["c3", "m4"]
        assert client.get("/object", params={"container": "other", "name": "m4"}).content == (
            b"list/04")
        missing = client.get("/object", params={"name": "list/00"})
        assert missing.status_code == 404
        assert missing.json()["error"] == 'object "list/00" does not exist in container "default"'


def test_a_container_not_granted_is_denied(host: tuple[str, HostProcess, Path]) -> None:
    _, process, _ = host
    with process.client() as client:
        for method, path in (("GET", "/list"), ("PUT", "/object"), ("GET", "/container"),
                             ("POST", "/container")):
            answer = client.request(method, path, params={"container": "secret", "name": "x"},
                                    content=b"x" if method == "PUT" else None)
            assert answer.status_code == 409
            assert answer.json()["error"] == ('access denied: container "secret" is not one of '
                                              "this component's blob_containers")
        copy = client.post("/copy", params={"from": "default/x", "to": "secret/x"})
        assert copy.json()["error"].startswith("access denied")
    assert process.wait_for_count('blob container "secret", which it was not granted', 5)


@pytest.mark.parametrize("name", ["../../escape", "/etc/passwd", "a/../../b", "..", ".container",
                                  "ünï/%2F/" + "x" * 900])
def test_names_that_look_like_paths_stay_inside_the_container(
        host: tuple[str, HostProcess, Path], name: str) -> None:
    kind, process, directory = host
    with process.client() as client:
        stored = client.put("/object", params={"name": name}, content=b"payload")
        assert stored.status_code == 200, stored.text
        assert client.get("/object", params={"name": name}).content == b"payload"
        listed = client.get("/list").json()["pages"]
        assert name in [n for p in listed for n in p]
        if kind == "file_system":
            root = directory / ".spin" / "blob_store" / "default"
            assert (root / encode_name(name)).read_bytes() == b"payload"
            outside = [p for p in directory.rglob("*") if p.is_file()
                       and root.parent not in p.parents and p.suffix not in (".wasm", ".toml")
                       and "logs" not in p.parts]
            assert outside == []
        assert client.delete("/object", params={"name": name}).status_code == 200
    bad = process.client().put("/object", params={"name": "nul\x00byte"}, content=b"x")
    assert bad.status_code == 409 and "control characters" in bad.json()["error"]


def test_an_object_over_the_size_limit_is_refused(wasm: Path, cache_dir: Path,
                                                  tmp_path: Path) -> None:
    with start_host(tmp_path, wasm, cache_dir, None, "--max-blob-bytes", "100000") as process:
        with process.client() as client:
            refused = client.put("/object", params={"name": "big"}, content=bytes(300_000))
            assert refused.status_code == 409
            assert "exceeds the limit of 100000 bytes" in refused.json()["error"]
            assert client.get("/object/info", params={"name": "big"}).json()["has"] is False
    root = tmp_path / ".spin" / "blob_store" / "default"
    assert sorted(p.name for p in root.iterdir()) == [".container"]  # no temp file left


def test_an_s3_server_that_goes_down_answers_an_error(wasm: Path, cache_dir: Path,
                                                      tmp_path: Path) -> None:
    server = start_s3(tmp_path)
    try:
        make_bucket(server.endpoint, "going-down")
        config = s3_runtime_config(server.endpoint, "going-down")
        with start_host(tmp_path / "app", wasm, cache_dir, config) as process:
            with process.client() as client:
                assert client.put("/object", params={"name": "k"}, content=b"v").status_code == 200
                server.stop()
                answer = client.get("/object", params={"name": "k"}, timeout=60)
                assert answer.status_code == 409
                message = answer.json()["error"]
                assert "s3 bucket going-down at http://127.0.0.1:" in message
                assert "connect" in message.lower()
                assert client.get("/.well-known/spin/health").status_code == 200
    finally:
        server.stop()


def test_a_deleted_container_directory_answers_an_error(wasm: Path, cache_dir: Path,
                                                        tmp_path: Path) -> None:
    with start_host(tmp_path, wasm, cache_dir) as process:
        with process.client() as client:
            assert client.put("/object", params={"name": "k"}, content=b"v").status_code == 200
            shutil.rmtree(tmp_path / ".spin" / "blob_store" / "default")
            gone = client.get("/object", params={"name": "k"})
            assert gone.status_code == 404
            assert "does not exist (create-container makes it)" in gone.json()["error"]
            assert client.post("/container").status_code == 200  # create-container
            assert client.put("/object", params={"name": "k"}, content=b"v2").status_code == 200
            assert client.get("/object", params={"name": "k"}).content == b"v2"


def test_an_unreachable_s3_endpoint_fails_start_up(wasm: Path, cache_dir: Path,
                                                   tmp_path: Path) -> None:
    config = s3_runtime_config("http://127.0.0.1:9", "nowhere")
    app = write_app(tmp_path, MANIFEST, {"blob-python.wasm": wasm})
    (tmp_path / "rt.toml").write_text(config)
    process = HostProcess(["-f", str(app), "--cache-dir", str(cache_dir),
                           "--runtime-config-file", str(tmp_path / "rt.toml")])
    with pytest.raises(RuntimeError, match="did not start"):
        process.start(timeout=60)
    lines = [line for line in process.lines if "blob container" in line]
    assert len(lines) == 1, process.output
    assert '[blob_store.default] in' in lines[0] and "s3 bucket nowhere" in lines[0]

