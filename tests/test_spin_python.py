"""A Spin SDK for Python app served unchanged by a real `host up`: apps/spin-python, built by
PyPI spin-sdk 3.4.1 + componentize-py 0.17.2 (world spin-http, wasi:http/incoming-handler@0.2.0
plus Spin's fermyon:spin@2.0.0 platform): hello, echo, Spin's key-value on SQLite and on a real
Redis, variables, SQLite (fermyon:spin/sqlite@2.0.0 and spin:sqlite@3.0.0), the interfaces this
host does not provide, and grants denied."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.apps import built_app
from tests.conftest import HostProcess, write_app
from tests.redis_server import flush

MiB = 1024 * 1024

pytestmark = pytest.mark.toolchain


def _manifest(wasm: Path, extra: str = "") -> str:
    return f"""spin_manifest_version = 2
[application]
name = "spin-python-test"
[variables]
greeting = {{ default = "Hello from a Spin variable" }}
secret = {{ required = true, secret = true }}
[[trigger.http]]
route = "/..."
component = "spin-python"
[component.spin-python]
source = "{wasm}"
key_value_stores = ["default"]
sqlite_databases = ["default"]
{extra}
[component.spin-python.variables]
greeting = "{{{{ greeting }}}} from the manifest"
"""


@pytest.fixture(scope="module")
def wasm() -> Path:
    return built_app("spin-python") / "spin-python.wasm"


@pytest.fixture(scope="module")
def host(wasm: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[HostProcess]:
    directory = write_app(tmp_path_factory.mktemp("spin-python"), _manifest(wasm)).parent
    env = {**os.environ, "SPIN_VARIABLE_SECRET": "s3cret"}
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir),
                      "--state-dir", str(directory / ".spin")], env=env) as process:
        yield process


def test_hello(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/")
    assert r.status_code == 200
    assert r.text == "Hello from Spin SDK for Python!\n"
    assert r.headers["content-type"] == "text/plain"


def test_echo_of_method_path_query_headers_and_a_4_mib_body(host: HostProcess) -> None:
    body = os.urandom(4 * MiB)
    with host.client() as client:  # the SDK reads the whole body before answering
        r = client.post("/echo/a/b?x=1&y=two", content=body, headers={"x-custom": "value"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["path"] == "/echo/a/b"
    assert doc["query"] == "x=1&y=two"
    assert doc["headers"]["x-custom"] == "value"
    assert doc["headers"]["spin-path-info"] == "/echo/a/b"
    assert doc["headers"]["spin-matched-route"] == "/..."
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_key_value_counter_on_the_embedded_sqlite_store(host: HostProcess) -> None:
    with host.client() as client:
        first = int(client.get("/counter").text)
        assert [int(client.get("/counter").text) for _ in range(3)] == [
            first + 1, first + 2, first + 3]
        listed = client.get("/kv").json()
    assert listed["exists"] is True
    assert {"hits", "probe"} <= set(listed["keys"])


def test_a_store_the_component_was_not_granted_is_access_denied(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/kv", params={"store": "other"})
    assert r.status_code == 500
    assert r.text == "error: Error_AccessDenied()\n"
    assert host.wait_for_output('tried to open key-value store "other"')


def test_variables_as_spin_answers_them(host: HostProcess) -> None:
    with host.client() as client:
        assert client.get("/variable").text == "Hello from a Spin variable from the manifest\n"
        undefined = client.get("/variable", params={"name": "secret"})  # not the component's
        invalid = client.get("/variable", params={"name": "Bad"})
    assert undefined.text.startswith("error: Error_Undefined(value=")
    assert "s3cret" not in undefined.text
    assert invalid.text.startswith("error: Error_InvalidName(value=")
    assert "invalid character 'B'" in invalid.text


def test_sqlite_through_both_of_spins_interfaces(host: HostProcess) -> None:
    with host.client() as client:
        counts = [int(client.get("/sqlite").text) for _ in range(2)]
        first, second = client.get("/sqlite3").json(), client.get("/sqlite3").json()
    assert counts[1] == counts[0] + 1
    assert first["columns"] == ["n"] and first["changes"] == 1
    assert second["rowid"] == first["rowid"] + 1
    assert second["count"] == first["count"] + 1


@pytest.mark.parametrize(("name", "error"), [
    # PostgreSQL is provided (tests/test_spin_postgres.py); this app may not reach it
    *[(name, "Error_ConnectionFailed(value='address postgres://127.0.0.1:5432/db is not "
             "permitted: allowed_outbound_hosts does not allow it; add "
             "\"postgres://127.0.0.1:5432\"')")
      for name in ("postgres", "postgres3", "postgres4")],
    ("mysql", "Error_ConnectionFailed(value='this host does not provide MySQL "
              "(fermyon:spin/mysql@2.0.0) yet')"),
    # MQTT is provided (tests/test_spin_mqtt.py); this app may not reach the broker
    ("mqtt", "Error_ConnectionFailed(value='address mqtt://127.0.0.1:1883 is not permitted: "
             "allowed_outbound_hosts does not allow it; add \"mqtt://127.0.0.1:1883\"')"),
    ("llm", "Error_RuntimeError(value='this host does not provide LLM inferencing "
            "(fermyon:spin/llm@2.0.0) yet')"),
])
def test_an_interface_this_host_does_not_provide_or_grant_answers_its_own_error(
        host: HostProcess, name: str, error: str) -> None:
    with host.client() as client:
        r = client.get(f"/unavailable/{name}")
    assert r.status_code == 500  # the app's own answer to the error it caught
    assert r.text == f"error: {error}\n"


def test_outbound_http_outside_the_grants_is_denied(host: HostProcess) -> None:
    with host.client() as client:
        r = client.get("/outbound", params={"url": f"{host.base_url}/"})
    assert r.text == "error: ErrorCode_HttpRequestDenied()\n"


def test_key_value_on_a_real_redis_through_the_runtime_config(
        wasm: Path, cache_dir: Path, redis_url: str, tmp_path: Path) -> None:
    flush(redis_url)
    directory = write_app(tmp_path / "app", _manifest(wasm)).parent
    config = tmp_path / "runtime-config.toml"
    config.write_text(f'[key_value_store.default]\ntype = "redis"\nurl = "{redis_url}"\n')
    env = {**os.environ, "SPIN_VARIABLE_SECRET": "x"}
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir),
                      "--runtime-config-file", str(config)], env=env) as process:
        with process.client() as client:
            counts = [client.get("/counter").text for _ in range(3)]
    assert counts == ["1\n", "2\n", "3\n"]
    assert redis.Redis.from_url(redis_url).get("hits") == b"3"  # in the real server
