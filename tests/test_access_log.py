"""host/access_log.py through a real `host up`: a whole line per request, plain and
JSON, never a query string or a header value; `--no-access-log` turns it off."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from host.access_log import _escape
from tests.conftest import HostProcess, write_app

MANIFEST = """spin_manifest_version = 2
[application]
name = "access"
[[trigger.http]]
route = "/echo/..."
component = "echo"
[[trigger.http]]
route = "/static"
static_response = { status_code = 201, body = "made" }
[component.echo]
source = "echo.wasm"
"""

PLAIN = re.compile(r"(\S+) (\S+) (\d{3}|-) (\S+) (\d+\.\d\d)ms (\d+)B")


@pytest.fixture
def app(tmp_path: Path, wat_components: dict[str, Path]) -> Path:
    return write_app(tmp_path / "app", MANIFEST, {"echo.wasm": wat_components["echo"]})


def access_lines(host: HostProcess) -> list[re.Match[str]]:
    return [m for line in host.lines if (m := PLAIN.fullmatch(line))]


def test_what_is_not_printable_is_escaped() -> None:
    # uvicorn refuses such request lines itself (400, before the app); the log does
    # not rely on it.
    assert _escape(b"/a/%20b") == "/a/%20b"
    assert _escape(b"/\xc3\xa9 x\n\x7f") == "/%C3%A9%20x%0A%7F"
    assert _escape("G\u00c9T") == "G%C9T"


def test_a_plain_line_per_request(app: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir)]) as host, \
            host.client() as client:
        r = client.post("/echo/a?token=SECRET-QUERY", content=b"hello",
                        headers={"authorization": "Bearer SECRET-HEADER"})
        assert r.status_code == 200 and r.content == b"hello"
        assert client.get("/static?x=1").status_code == 201
        assert client.get("/nothing-here").status_code == 404
        assert client.get("/.well-known/spin/health").status_code == 200
        assert client.get("/echo/%C3%A9").status_code == 200
        assert host.wait_for_count("/echo/%C3%A9 200 echo", 1)
        lines = [m.groups() for m in access_lines(host)]
    assert "SECRET" not in host.output
    health = ("GET", "/.well-known/spin/health", "200", "-")
    lines = [line for line in lines if line[:4] != health]  # the start-up probes
    assert [line[:4] for line in lines] == [
        ("POST", "/echo/a", "200", "echo"),
        ("GET", "/static", "201", "-"),
        ("GET", "/nothing-here", "404", "-"),
        ("GET", "/echo/%C3%A9", "200", "echo"),
    ]
    assert [int(line[5]) for line in lines[:3]] == [5, 4, 0]  # body bytes sent


def test_json_lines_carry_the_fields(app: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--log-format", "json"]
                     ) as host, host.client() as client:
        assert client.put("/echo/b/c?secret=SECRET", content=b"xyz").status_code == 200
        assert host.wait_for_output('"path": "/echo/b/c"')
    entries = [json.loads(line) for line in host.lines if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "access" and e["path"] == "/echo/b/c"]
    assert len(access) == 1
    entry = access[0]
    assert entry["message"] == "PUT /echo/b/c 200"
    assert (entry["method"], entry["status"], entry["component"], entry["bytes"]) == (
        "PUT", 200, "echo", 3)
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] > 0
    assert "SECRET" not in host.output


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_no_access_log(app: Path, cache_dir: Path, how: str) -> None:
    args = ["-f", str(app), "--cache-dir", str(cache_dir)]
    env = dict(os.environ)
    if how == "flag":
        args.append("--no-access-log")
    else:
        env["SPINHOST_NO_ACCESS_LOG"] = "true"
    with HostProcess(args, env=env) as host, host.client() as client:
        assert client.get("/echo/x").status_code == 200
        assert client.get("/static").status_code == 201
    host.wait()
    assert host.output_closed.wait(10)
    assert access_lines(host) == []


def test_whole_lines_from_concurrent_workers(app: Path, cache_dir: Path) -> None:
    with HostProcess(["-f", str(app), "--cache-dir", str(cache_dir), "--workers", "2"]
                     ) as host, host.client() as client:
        paths = [f"/echo/{i}-{'x' * (i % 50)}" for i in range(300)]
        with ThreadPoolExecutor(16) as pool:
            assert {r.status_code for r in pool.map(client.get, paths)} == {200}
        assert host.wait_for_count(" 200 echo ", len(paths))
    logged = sorted(m.group(2) for m in access_lines(host) if m.group(4) == "echo")
    assert logged == sorted(paths)
    # Nothing else printed: no access line was split or glued to another.
    assert not [line for line in host.lines if "/echo/" in line and not PLAIN.fullmatch(line)]
