"""Capabilities through a real `host up`: what a component is granted, and what not.

The guest is apps/capability-probe (componentize-py, world `platform`): each
route tries one capability and reports the outcome as JSON, including the
error value the host returned. Manifests are written per test around the same
.wasm, so each test states exactly what it grants.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.apps import built_app
from tests.conftest import HostProcess, run_host, write_app
from tests.loopback import Upstream, upstream_server


@pytest.fixture(scope="module")
def probe_wasm() -> Path:
    return built_app("capability-probe") / "capability-probe.wasm"


def probe_manifest(component: str = "", variables: str = "") -> str:
    return f"""spin_manifest_version = 2
[application]
name = "probe-test"
[variables]
{variables}
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "probe.wasm"
{component}
"""


def start(app: Path, cache_dir: Path, *args: str, env: dict[str, str] | None = None
          ) -> HostProcess:
    return HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--pool-size", "1",
                        *args], env=env).start()


def write_probe(directory: Path, wasm: Path, component: str = "", variables: str = "") -> Path:
    return write_app(directory, probe_manifest(component, variables), {"probe.wasm": wasm})


# ---------------------------------------------------------------------------
# Key-value


def test_kv_granted_store_round_trips_bytes(probe_wasm: Path, cache_dir: Path,
                                            tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'key_value_stores = ["default"]')
    value = os.urandom(1024 * 1024)
    host = start(app, cache_dir)
    try:
        with host.client() as c:
            assert c.post("/kv/set?key=blob", content=value).json() == {
                "set": "blob", "bytes": len(value)}
            got = c.get("/kv/get?key=blob")
            assert got.status_code == 200 and got.content == value
            assert c.post("/kv/set?key=empty", content=b"").status_code == 200
            assert c.get("/kv/get?key=empty").content == b""
            assert c.get("/kv/get?key=never").status_code == 404
            assert c.get("/kv/incr?key=n&delta=5").json() == {"value": 5}
            assert c.get("/kv/incr?key=n&delta=-7").json() == {"value": -2}
            assert c.get("/kv/get?key=n").content == b"-2"  # counters are decimal text
            assert c.get("/kv/incr?key=blob").json()["error"].startswith("other: ")
            assert c.get("/kv/keys").json() == {"keys": ["blob", "empty", "n"], "pages": 1}
            assert c.get("/kv/delete?key=n").json() == {"deleted": "n", "exists": False}
            assert c.get("/kv/batch").json() == {
                "got": [["b1", "one"], ["b2", "two"], None], "after": [None, ["b2", "two"]]}
            assert c.get("/kv/cas?key=c&value=new").json() == {
                "before": None, "stale": "cas-failed", "now": "new"}
    finally:
        host.stop()
    # The default store is an SQLite file in the state dir, next to the manifest.
    assert (app.parent / ".spin" / "sqlite_key_value.db").is_file()
    assert 'Storing default key-value data to "' in host.output


def test_kv_undeclared_store_is_access_denied(probe_wasm: Path, cache_dir: Path,
                                              tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'key_value_stores = ["default"]')
    with start(app, cache_dir) as host, host.client() as c:
        assert c.get("/kv/open?label=secrets").json() == {"error": "access-denied"}
        assert host.wait_for_output('component "probe" tried to open key-value store '
                                    '"secrets", which it was not granted')
    no_grant = write_probe(tmp_path / "none", probe_wasm)
    with start(no_grant, cache_dir) as host, host.client() as c:
        assert c.get("/kv/open?label=default").json() == {"error": "access-denied"}


def test_kv_data_survives_a_restart(probe_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'key_value_stores = ["default"]')
    with start(app, cache_dir) as host, host.client() as c:
        assert [c.get("/kv/incr?key=visits").json()["value"] for _ in range(3)] == [1, 2, 3]
    with start(app, cache_dir) as host, host.client() as c:
        assert c.get("/kv/incr?key=visits").json() == {"value": 4}


def test_kv_labels_default_to_the_embedded_file(probe_wasm: Path, cache_dir: Path,
                                                tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'key_value_stores = ["default", "cache"]')
    with start(app, cache_dir) as host, host.client() as c:
        assert c.post("/kv/set?key=k&label=cache", content=b"v").status_code == 200
        assert c.get("/kv/get?key=k&label=cache").content == b"v"
        assert c.get("/kv/get?key=k").status_code == 404  # labels are separate stores
    files = sorted(p.name for p in (app.parent / ".spin").glob("*.db"))
    assert files == ["sqlite_key_value.db"]  # one file, the store column keeps them apart
    config = tmp_path / "rc.toml"
    config.write_text('[key_value_store.cache]\ntype = "spin"\npath = "data/cache.db"\n')
    with start(app, cache_dir, "--runtime-config-file", str(config)) as host, host.client() as c:
        assert c.get("/kv/get?key=k&label=cache").status_code == 404  # now its own file
        assert c.post("/kv/set?key=k&label=cache", content=b"w").status_code == 200
    assert (tmp_path / "data" / "cache.db").is_file()  # relative to the config file


def test_kv_redis_backend(probe_wasm: Path, cache_dir: Path, tmp_path: Path,
                          clean_redis_url: str) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'key_value_stores = ["default"]')
    config = tmp_path / "prod.toml"
    config.write_text(f'[key_value_store.default]\ntype = "redis"\nurl = "{clean_redis_url}"\n')
    value = bytes(range(256)) * 4096
    with start(app, cache_dir, "--runtime-config-file", str(config)) as host, host.client() as c:
        assert c.post("/kv/set?key=bytes", content=value).status_code == 200
        assert c.get("/kv/get?key=bytes").content == value
        assert c.get("/kv/incr?key=hits&delta=2").json() == {"value": 2}
        assert c.get("/kv/batch").json()["after"] == [None, ["b2", "two"]]
        assert c.get("/kv/cas?key=c&value=new").json()["now"] == "new"
        assert "redis redis://127.0.0.1" in host.output
    direct = redis.Redis.from_url(clean_redis_url)
    assert direct.get("bytes") == value and direct.get("hits") == b"2"
    assert not (app.parent / ".spin" / "sqlite_key_value.db").exists()


@pytest.mark.parametrize(("config", "message"), [
    ('[key_value_store.default]\ntype = "dynamo"\n',
     'unsupported key-value store type "dynamo" (supported: spin, redis)'),
    ('[key_value_store.default]\ntype = "redis"\n', '[key_value_store.default]: missing '
     'required key "url"'),
    ('[key_value_store.default]\ntype = "spin"\npaht = "x.db"\n', 'unknown key "paht"'),
    ('[sqlite_database.default]\ntype = "libsql"\n', 'unsupported SQLite database type'),
    ('[[variables_provider]]\ntype = "vault"\n', 'unsupported variables provider type "vault"'),
    ('[outbound_http]\nconnection_pooling = false\n', '"outbound_http" is not supported'),
    ('colour = "blue"\n', 'unknown key "colour"'),
    ('[key_value_store.default\n', "invalid TOML"),
    ('[key_value_store.default]\ntype = "redis"\nurl = "redis://127.0.0.1:1"\n',
     "cannot reach Redis at redis://127.0.0.1:1"),
    ('[sqlite_database.default]\ntype = "spin"\npath = "/proc/nope/db.db"\n',
     "[sqlite_database.default] in "),
    ('[key_value_store.default]\ntype = "spin"\npath = "/proc/nope/kv.db"\n',
     "cannot create /proc/nope"),
])
def test_bad_runtime_config_is_a_clear_startup_error(probe_wasm: Path, cache_dir: Path,
                                                     tmp_path: Path, config: str,
                                                     message: str) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'key_value_stores = ["default"]\n'
                      'sqlite_databases = ["default"]')
    path = tmp_path / "runtime-config.toml"
    path.write_text(config)
    result = run_host("up", "-f", str(app), "--cache-dir", str(cache_dir), "--listen",
                      "127.0.0.1:0", "--runtime-config-file", str(path))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------
# Variables


VARIABLES = 'api_host = { default = "api.internal" }\ntoken = { required = true, secret = true }'
COMPONENT_VARIABLES = ('[component.probe.variables]\n'
                       'api_url = "https://{{ api_host }}/v1"\ntoken = "{{ token }}"')


def test_variables_from_env_and_defaults(probe_wasm: Path, cache_dir: Path,
                                         tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, COMPONENT_VARIABLES, VARIABLES)
    env = {**os.environ, "SPIN_VARIABLE_TOKEN": "hunter2-secret"}
    with start(app, cache_dir, env=env) as host, host.client() as c:
        assert c.get("/config?key=api_url").json() == {"value": "https://api.internal/v1"}
        assert c.get("/config?key=token").json() == {"value": "hunter2-secret"}
        assert c.get("/config?key=api_host").json() == {"value": None}  # app-level only
        assert c.get("/config/all").json() == {"values": {
            "api_url": "https://api.internal/v1", "token": "hunter2-secret"}}
        info = c.get("/.well-known/spin/info").text
    assert "hunter2" not in info and "hunter2" not in host.output
    env["SPIN_VARIABLE_API_HOST"] = "api.example.com"
    with start(app, cache_dir, env=env) as host, host.client() as c:
        assert c.get("/config?key=api_url").json() == {"value": "https://api.example.com/v1"}


def test_required_variable_without_value_stops_startup(probe_wasm: Path, cache_dir: Path,
                                                       tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, COMPONENT_VARIABLES, VARIABLES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
    result = run_host("check", "-f", str(app), "--cache-dir", str(cache_dir), cwd=tmp_path)
    assert result.returncode == 1
    assert 'required variable "token" has no value: set SPIN_VARIABLE_TOKEN' in result.stderr
    assert "Traceback" not in result.stderr
    del env  # run_host inherits os.environ, which the test runner keeps free of SPIN_VARIABLE_*


def test_variables_from_runtime_config_providers(probe_wasm: Path, cache_dir: Path,
                                                 tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, COMPONENT_VARIABLES, VARIABLES)
    (tmp_path / "vars.env").write_text("# team secrets\nAPP_TOKEN='from-dotenv'\n")
    config = tmp_path / "rc.toml"
    config.write_text('[[variables_provider]]\ntype = "static"\nvalues = { api_host = "s.io" }\n'
                      '[[variables_provider]]\ntype = "env"\nprefix = "APP"\n'
                      'dotenv_path = "vars.env"\n')
    with start(app, cache_dir, "--runtime-config-file", str(config)) as host, host.client() as c:
        assert c.get("/config/all").json() == {"values": {
            "api_url": "https://s.io/v1", "token": "from-dotenv"}}


# ---------------------------------------------------------------------------
# Outbound HTTP


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


def test_outbound_allowed_host(probe_wasm: Path, cache_dir: Path, tmp_path: Path,
                               upstream: Upstream) -> None:
    port = upstream.server_address[1]
    app = write_probe(tmp_path / "app", probe_wasm,
                      'allowed_outbound_hosts = ["http://{{ api_host }}:' + str(port) + '"]',
                      'api_host = { default = "127.0.0.1" }')
    with start(app, cache_dir) as host, host.client() as c:
        got = c.get("/http", params={"url": f"http://127.0.0.1:{port}/x?y=1", "method": "post",
                                     "body": "hi"}).json()
        assert got["status"] == 201 and got["body"] == "upstream saw POST /x?y=1"
        assert got["headers"]["x-upstream"] == "yes"
        assert upstream.seen == [{"method": "POST", "path": "/x?y=1", "probe": "1",
                                  "body": "hi"}]
        # Over the response cap (2 MiB): an error value, not a trap or a 500.
        big = c.get("/http", params={"url": f"http://127.0.0.1:{port}/big"}).json()
        assert big["error"].startswith("http-response-body-size")
        # Same host, another port: not in the list.
        other = c.get("/http", params={"url": f"http://127.0.0.1:{port + 1}/"}).json()
        assert other == {"error": "http-request-denied"}
        assert host.wait_for_output("disallowed destination 'http://127.0.0.1:")
        by_name = c.get("/http", params={"url": f"http://localhost:{port}/"}).json()
        assert by_name == {"error": "http-request-denied"}
        assert c.get("/http", params={"url": "/env"}).json() == {"error": "http-request-denied"}


def test_outbound_denied_without_grant(probe_wasm: Path, cache_dir: Path, tmp_path: Path,
                                       upstream: Upstream) -> None:
    app = write_probe(tmp_path / "app", probe_wasm)
    url = f"http://127.0.0.1:{upstream.server_address[1]}/"
    with start(app, cache_dir) as host, host.client() as c:
        assert c.get("/http", params={"url": url}).json() == {"error": "http-request-denied"}
        assert host.wait_for_output("To allow this request, add 'allowed_outbound_hosts")
    assert upstream.seen == []


def test_outbound_self_requests(probe_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'allowed_outbound_hosts = ["http://self"]\n'
                      'environment = { WHO = "me" }')
    with start(app, cache_dir) as host, host.client() as c:
        got = c.get("/http", params={"url": "/env"}).json()
        assert got["status"] == 200 and json.loads(got["body"]) == {"WHO": "me"}


@pytest.mark.parametrize("names", ["DNS:app.example.com", "IP:127.0.0.1"])
def test_outbound_self_requests_over_https_trust_the_hosts_own_certificate(
        probe_wasm: Path, cache_dir: Path, tmp_path: Path, names: str) -> None:
    # Self-signed, and (first case) naming a host the loopback origin is not:
    # neither a public CA nor the name check could accept it; the host's own
    # certificate, pinned, does.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=app.example.com", "-keyout", str(key), "-out", str(cert),
                    "-addext", f"subjectAltName={names}"], check=True, capture_output=True)
    app = write_probe(tmp_path / "app", probe_wasm, 'allowed_outbound_hosts = ["http://self"]\n'
                      'environment = { WHO = "me" }')
    trusting = ssl.create_default_context(cafile=str(cert))
    trusting.check_hostname = False
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--tls-cert", str(cert),
                      "--tls-key", str(key)], verify=trusting) as host, host.client() as c:
        assert host.base_url.startswith("https://")
        got = c.get("/http", params={"url": "/env"}).json()
        assert got["status"] == 200 and json.loads(got["body"]) == {"WHO": "me"}


def test_outbound_call_does_not_block_other_requests(probe_wasm: Path, cache_dir: Path,
                                                     tmp_path: Path,
                                                     upstream: Upstream) -> None:
    port = upstream.server_address[1]
    app = write_probe(tmp_path / "app", probe_wasm,
                      f'allowed_outbound_hosts = ["http://127.0.0.1:{port}"]')
    with start(app, cache_dir) as host, host.client() as c:
        slow: dict[str, object] = {}
        caller = threading.Thread(target=lambda: slow.update(
            c.get("/http", params={"url": f"http://127.0.0.1:{port}/slow"}).json()))
        caller.start()
        assert upstream.arrived.wait(30)  # the guest is now waiting on the upstream
        for _ in range(5):
            assert c.get("/env").status_code == 200
        assert caller.is_alive() and not slow  # still waiting while others were served
        upstream.release.set()
        caller.join(30)
        assert slow["status"] == 201


# ---------------------------------------------------------------------------
# SQLite


def sql(c: httpx.Client, statement: str, *params: object) -> object:
    return c.post("/sqlite", json={"sql": statement, "params": list(params)}).json()


def test_sqlite_granted_database(probe_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'sqlite_databases = ["default"]')
    with start(app, cache_dir) as host, host.client() as c:
        assert sql(c, "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)") == {
            "columns": [], "rows": []}
        sql(c, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", 2**62, 1.5, "héllo", {"blob": "00ff"}, None)
        assert sql(c, "SELECT * FROM t") == {
            "columns": ["i", "r", "s", "b", "n"],
            "rows": [[2**62, 1.5, "héllo", {"blob": "00ff"}, None]]}
        assert sql(c, "SELEC 1")["error"] == 'io: near "SELEC": syntax error'
    # Data lives in the default file and survives the process.
    assert (app.parent / ".spin" / "sqlite_db.db").is_file()
    with start(app, cache_dir) as host, host.client() as c:
        assert sql(c, "SELECT count(*) AS n FROM t") == {"columns": ["n"], "rows": [[1]]}


def test_sqlite_undeclared_and_unknown_labels(probe_wasm: Path, cache_dir: Path,
                                              tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'sqlite_databases = ["default"]')
    with start(app, cache_dir) as host, host.client() as c:
        got = c.post("/sqlite?label=billing", json={"sql": "SELECT 1"}).json()
        assert got == {"error": "access-denied"}
        assert host.wait_for_output('tried to open SQLite database "billing"')
    app = write_probe(tmp_path / "app2", probe_wasm, 'sqlite_databases = ["billing"]')
    result = run_host("check", "-f", str(app), "--cache-dir", str(cache_dir))
    assert result.returncode == 1
    assert 'unknown sqlite_databases label "billing" for component "probe"' in result.stderr
    config = tmp_path / "rc.toml"
    config.write_text('[sqlite_database.billing]\ntype = "spin"\npath = "db/billing.db"\n')
    with start(app, cache_dir, "--runtime-config-file", str(config)) as host, host.client() as c:
        got = c.post("/sqlite?label=billing", json={"sql": "SELECT 40 + 2 AS x"}).json()
        assert got == {"columns": ["x"], "rows": [[42]]}
    assert (tmp_path / "db" / "billing.db").is_file()


# ---------------------------------------------------------------------------
# Files and environment


def test_files_are_mounted_read_only_and_nothing_else(probe_wasm: Path, cache_dir: Path,
                                                      tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    (app_dir / "static" / "css").mkdir(parents=True)
    (app_dir / "static" / "index.html").write_text("<h1>hi</h1>")
    (app_dir / "static" / "css" / "site.css").write_text("body{}")
    (app_dir / "assets").mkdir()
    (app_dir / "assets" / "data.json").write_text("{}")
    (app_dir / "secret.txt").write_text("do not mount")
    app = write_probe(app_dir, probe_wasm, 'files = ["static/**/*", { source = "assets", '
                      'destination = "/data" }]\nexclude_files = ["static/css/*"]')
    with start(app, cache_dir) as host, host.client() as c:
        assert c.get("/files/list?path=/").json() == {"entries": ["data", "static"]}
        assert c.get("/files/list?path=/static").json() == {"entries": ["index.html"]}
        assert c.get("/files?path=/static/index.html").json() == {"content": "<h1>hi</h1>"}
        assert c.get("/files?path=/data/data.json").json() == {"content": "{}"}
        assert c.get("/files?path=/secret.txt").json()["os-error"] == "FileNotFoundError"
        assert c.get("/files?path=/static/../../secret.txt").json().get("content") is None
        assert c.get("/files?path=/etc/passwd").json()["os-error"] == "FileNotFoundError"
        wrote = c.get("/files?path=/static/index.html&write=1").json()
        assert wrote["os-error"] == "PermissionError"
    assert (app_dir / "static" / "index.html").read_text() == "<h1>hi</h1>"


def test_no_files_means_no_filesystem(probe_wasm: Path, cache_dir: Path, tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm)
    with start(app, cache_dir) as host, host.client() as c:
        assert c.get("/files/list?path=/").json()["os-error"] == "FileNotFoundError"


def test_files_escaping_the_app_dir_stop_startup(probe_wasm: Path, cache_dir: Path,
                                                 tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("host file")
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "link.txt").symlink_to(tmp_path / "outside.txt")
    for files in ('files = ["../outside.txt"]', 'files = ["link.txt"]'):
        app = write_probe(app_dir, probe_wasm, files)
        result = run_host("check", "-f", str(app), "--cache-dir", str(cache_dir))
        assert result.returncode == 1, files
        assert "[component.probe] files" in result.stderr
        assert "Traceback" not in result.stderr


def test_environment_is_manifest_plus_cli_only(probe_wasm: Path, cache_dir: Path,
                                               tmp_path: Path) -> None:
    app = write_probe(tmp_path / "app", probe_wasm, 'environment = { MODE = "test" }')
    env = {**os.environ, "HOST_ONLY_SECRET": "leak"}
    with start(app, cache_dir, "-e", "EXTRA=1", "-e", "MODE=cli", env=env) as host, \
            host.client() as c:
        assert c.get("/env").json() == {"MODE": "cli", "EXTRA": "1"}


# ---------------------------------------------------------------------------
# The example app: apps/kv-counter


def test_kv_counter_on_the_dev_stack(cache_dir: Path, tmp_path: Path) -> None:
    app_dir = built_app("kv-counter")
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    with start(app_dir, cache_dir, *args) as host, host.client() as c:
        assert [c.get("/").text for _ in range(3)] == ["1\n", "2\n", "3\n"]
        assert c.get("/greeting").text == "Hello, world!\n"
        assert "/visits" in c.get("/visits").text
    assert (state / "sqlite_key_value.db").is_file() and (state / "sqlite_db.db").is_file()


def test_kv_counter_same_wasm_on_the_prod_stack(cache_dir: Path, tmp_path: Path,
                                                clean_redis_url: str) -> None:
    app_dir = built_app("kv-counter")
    prod = (app_dir / "runtime-config.prod.toml").read_text()
    config = tmp_path / "prod.toml"
    # Its relative SQLite path now resolves under tmp_path, next to this copy.
    config.write_text(prod.replace("redis://127.0.0.1:6379/0", clean_redis_url))
    with start(app_dir, cache_dir, "--runtime-config-file", str(config)) as host, \
            host.client() as c:
        assert [c.get("/").text for _ in range(2)] == ["1\n", "2\n"]
        assert c.get("/greeting").text == "Welcome, world!\n"
    assert redis.Redis.from_url(clean_redis_url).get("count") == b"2"


def test_two_hosts_share_one_sqlite_store_exactly(cache_dir: Path, tmp_path: Path) -> None:
    """Two host processes, 1,000 increments each, on the same SQLite file: 2,000."""
    app_dir = built_app("kv-counter")
    args = ["--state-dir", str(tmp_path / "state")]
    hosts = [start(app_dir, cache_dir, *args), start(app_dir, cache_dir, *args)]
    try:
        def hammer(base_url: str) -> None:
            with httpx.Client(base_url=base_url, timeout=30) as c:
                for _ in range(250):
                    assert c.get("/").status_code == 200
        threads = [threading.Thread(target=hammer, args=(h.base_url,))
                   for h in hosts for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with hosts[0].client() as c:
            assert c.get("/").text == "2001\n"
    finally:
        for h in hosts:
            h.stop()
