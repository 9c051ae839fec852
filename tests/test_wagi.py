"""host/executors/wagi.py: WASI preview 1 programs over CGI, through a real `host up`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from host.executors.wagi import MISSING_HEADERS, argv_for, parse_cgi_output
from tests import wat
from tests.conftest import HostProcess, run_host, write_app

# (case, program stdout, exit code or None, status, headers expected, body expected)
OUTPUT_CASES = [
    ("plain", b"Content-Type: text/plain\n\nhello", None, 200, {"content-type": "text/plain"},
     b"hello"),
    ("crlf", b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody\r\n", None, 200, {"x-a": "1"},
     b"body\r\n"),
    ("status", b"Status: 404 Not Found\nContent-Type: text/plain\n\nnope", None, 404, {},
     b"nope"),
    ("location", b"Location: /elsewhere\n\n", None, 302, {"location": "/elsewhere"}, b""),
    ("location and status", b"Location: /x\nStatus: 301\n\n", None, 301, {"location": "/x"},
     b""),
    ("no content headers", b"X-Only: 1\n\nbody", None, 500, {}, MISSING_HEADERS),
    ("bad status", b"Status: abc\nContent-Type: text/plain\n\n", None, 502, {}, b""),
    ("empty stdout", b"", None, 500, {}, b""),
    ("repeated headers", b"Content-Type: a/b\nX-R: 1\nX-R: 2\n\n", None, 200, {"x-r": "2"},
     b""),
    ("binary body", b"Content-Type: application/octet-stream\n\n" + bytes(range(256)), None,
     200, {}, bytes(range(256))),
    ("malformed line ignored", b"Content-Type: text/plain\nnot a header\n\nok", None, 200, {},
     b"ok"),
    ("spaces trimmed", b"Content-Type :  text/html  \n\n<p>", None, 200,
     {"content-type": "text/html"}, b"<p>"),
    ("status only", b"Status: 204\n\n", None, 204, {}, b""),
    ("exit zero is fine", b"Content-Type: text/plain\n\nbye", 0, 200, {}, b"bye"),
    ("exit three is an error", b"Content-Type: text/plain\n\nbye", 3, 500, {}, b""),
]


def _slug(case: str) -> str:
    return case.replace(" ", "-")


@pytest.fixture(scope="module")
def wagi_host(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    directory = tmp_path_factory.mktemp("wagi-app")
    manifest = ['spin_manifest_version = 2', '[application]', 'name = "wagi"']
    for case, output, code, *_ in OUTPUT_CASES:
        slug = _slug(case)
        wat.build_module(wat.wasi_print(output, code), directory / f"{slug}.wasm")
        manifest += ["[[trigger.http]]", f'route = "/out/{slug}"', f'component = "{slug}"',
                     'executor = { type = "wagi" }', f"[component.{slug}]",
                     f'source = "{slug}.wasm"']
    wat.build_module(wat.WASI_CGI_ECHO, directory / "cgi.wasm")
    wat.build_module(wat.WASI_TRAP, directory / "trap.wasm")
    wat.build_module(wat.WASI_LOOP, directory / "loop.wasm")
    manifest += [
        "[[trigger.http]]", 'route = "/cgi/:user_id/..."', 'component = "cgi"',
        'executor = { type = "wagi" }',
        "[[trigger.http]]", 'route = "/argv"', 'component = "cgi"',
        'executor = { type = "wagi", argv = "${SCRIPT_NAME} fixed ${ARGS}" }',
        "[[trigger.http]]", 'route = "/trap"', 'component = "trap"',
        'executor = { type = "wagi" }',
        "[[trigger.http]]", 'route = "/loop"', 'component = "loop"',
        'executor = { type = "wagi" }',
        "[component.cgi]", 'source = "cgi.wasm"', 'environment = { FROM_MANIFEST = "yes" }',
        "[component.trap]", 'source = "trap.wasm"',
        "[component.loop]", 'source = "loop.wasm"',
    ]
    write_app(directory, "\n".join(manifest) + "\n")
    with HostProcess(["-f", str(directory), "--cache-dir", str(cache_dir),
                      "--request-timeout", "1", "-e", "FROM_CLI=1"]) as host:
        yield host


@pytest.fixture
def client(wagi_host: HostProcess):
    with wagi_host.client() as c:
        yield c


@pytest.mark.parametrize("case,output,code,status,headers,body", OUTPUT_CASES,
                         ids=[c[0] for c in OUTPUT_CASES])
def test_stdout_is_parsed_as_cgi(client: httpx.Client, case: str, output: bytes,
                                 code: int | None, status: int, headers: dict[str, str],
                                 body: bytes) -> None:
    r = client.get(f"/out/{_slug(case)}", follow_redirects=False)
    assert r.status_code == status
    assert r.content == body
    for name, value in headers.items():
        assert r.headers.get_list(name) == [value]
    assert "server" not in r.headers


def _cgi(r: httpx.Response) -> tuple[dict[str, str], list[str], bytes]:
    assert r.status_code == 200, r.text
    _, env_buf, argv_buf, stdin = r.content.split(b"\x01", 3)
    env = dict(item.decode().split("=", 1) for item in env_buf.split(b"\0") if item)
    argv = [a.decode() for a in argv_buf.split(b"\0")[:-1]]
    return env, argv, stdin


def test_cgi_environment_argv_and_stdin(client: httpx.Client, wagi_host: HostProcess) -> None:
    body = bytes(range(256)) * 300  # 75 KiB, read in several chunks
    r = client.post("/cgi/42/a%20b/c?x=1&y=2", content=body,
                    headers={"Authorization": "Bearer secret", "X-Custom": "v",
                             "Content-Type": "application/x-test", "spin-full-url": "forged"})
    env, argv, stdin = _cgi(r)
    port = wagi_host.base_url.rsplit(":", 1)[1]
    assert stdin == body
    assert argv == ["/cgi/42/a%20b/c", "x=1", "y=2"]
    expected = {
        "AUTH_TYPE": "", "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-test",
        "GATEWAY_INTERFACE": "CGI/1.1", "QUERY_STRING": "x=1&y=2", "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_HOST": "127.0.0.1", "REMOTE_USER": "", "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/cgi/:user_id", "PATH_INFO": "/a%20b/c", "X_RAW_PATH_INFO": "/a%20b/c",
        "PATH_TRANSLATED": "/a b/c", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": port,
        "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": "WAGI/1",
        "X_FULL_URL": f"{wagi_host.base_url}/cgi/42/a%20b/c?x=1&y=2",
        "X_MATCHED_ROUTE": "/cgi/:user_id/...", "X_COMPONENT_ROUTE": "/cgi/:user_id",
        "X_RAW_COMPONENT_ROUTE": "/cgi/:user_id/...", "X_BASE_PATH": "/",
        "X_PATH_MATCH_USER_ID": "42", "HTTP_X_CUSTOM": "v",
        "HTTP_HOST": f"127.0.0.1:{port}", "HTTP_CONTENT_TYPE": "application/x-test",
        "FROM_MANIFEST": "yes", "FROM_CLI": "1",
    }
    for name, value in expected.items():
        assert env.get(name) == value, name
    assert env["X_CLIENT_ADDR"].startswith("127.0.0.1:")
    assert "HTTP_AUTHORIZATION" not in env
    assert "HTTP_CONNECTION" not in env
    assert not any(name.startswith("HTTP_SPIN_") for name in env)


def test_argv_template_and_empty_query(client: httpx.Client) -> None:
    env, argv, stdin = _cgi(client.get("/argv"))
    assert argv == ["/argv", "fixed", ""]  # Spin splits on single spaces: a trailing ""
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["CONTENT_LENGTH"]) == ("/argv", "", "0")
    assert stdin == b""
    _, argv, _ = _cgi(client.get("/argv?a=1&b"))
    assert argv == ["/argv", "fixed", "a=1", "b"]


def test_trap_and_deadline(client: httpx.Client, wagi_host: HostProcess) -> None:
    assert client.get("/trap").status_code == 500
    assert wagi_host.wait_for_output("Error processing request: component trap: wasm trap")
    assert "unreachable" in wagi_host.output
    assert client.get("/loop").status_code == 504
    assert wagi_host.wait_for_output("component loop: deadline of 1 s exceeded")
    assert client.get("/out/plain").status_code == 200


@pytest.mark.parametrize("template,path,query,expected", [
    ("${SCRIPT_NAME} ${ARGS}", "/p", "", ["/p", ""]),
    ("${SCRIPT_NAME} ${ARGS}", "/p", "a=1&b=2", ["/p", "a=1", "b=2"]),
    ("${SCRIPT_NAME}", "/a%20b", "x", ["/a%20b"]),
    ("prog  ${ARGS}", "/p", "q", ["prog", "", "q"]),
])
def test_argv_for(template: str, path: str, query: str, expected: list[str]) -> None:
    assert argv_for(template, path, query) == expected


def test_parse_location_without_status_is_302() -> None:
    assert parse_cgi_output(b"Location: http://x/\n\n").status == 302


def test_component_is_refused_by_wagi_and_module_by_http(tmp_path: Path,
                                                         wat_components: dict[str, Path]) -> None:
    write_app(tmp_path, """spin_manifest_version = 2
[application]
name = "x"
[[trigger.http]]
route = "/..."
component = "c"
executor = { type = "wagi" }
[component.c]
source = "fixed.wasm"
""", {"fixed.wasm": wat_components["fixed"]})
    result = run_host("check", "-f", str(tmp_path), "--disable-cache")
    assert result.returncode == 1
    assert "WAGI executor runs WASI preview 1 command modules" in result.stderr
