"""host/logs.py: library loggers stay at WARNING, so URLs with their secrets never reach the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
import wasmtime.component as wc

from host import logs
from host.capabilities import Ok
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.outbound import Outbound, OutboundClient
from tests.loopback import upstream_server


@pytest.fixture
def configured() -> Iterator[None]:
    """Let a test call logs.configure; put the logging setup back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logs.LIBRARY_LOGGERS}
    fmt = logs._format
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
        logs._format = fmt


def test_library_loggers_speak_at_warning_only(configured: None) -> None:
    logs.configure("plain", quiet=False)
    assert logging.getLogger().level == logging.INFO
    for name in ("httpx", "httpcore", "httpcore.connection", "urllib3", "redis"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    assert logging.getLogger("host.outbound").isEnabledFor(logging.INFO)


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_outbound_call_logs_origin_and_status_but_no_query(
        configured: None, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    logs.configure(fmt, quiet=False)
    with upstream_server() as upstream:
        port = upstream.server_address[1]
        client = OutboundClient()
        cap = Outbound("probe", AllowList.parse([f"http://127.0.0.1:{port}"]), client)
        try:
            result = cap.handle(None, SimpleNamespace(**{
                "method": wc.Variant("get"), "scheme": wc.Variant("HTTP"),
                "authority": f"127.0.0.1:{port}", "path-with-query": "/api?token=SECRET",
                "headers": [("authorization", b"Bearer SECRET-HEADER")], "body": b"",
            }))
            # The registry client's own requests (upload locations with a state token).
            httpx.get(f"http://127.0.0.1:{port}/v2/x/blobs/uploads/1?_state=SECRET-STATE")
        finally:
            client.close()
    assert isinstance(result, Ok) and result.value[0] == 201
    assert upstream.seen[0]["path"] == "/api?token=SECRET"  # the upstream did get it
    err = capsys.readouterr().err
    assert "SECRET" not in err
    assert f"GET http://127.0.0.1:{port} -> 201 in " in err
    assert 'component \\"probe\\"' in err if fmt == "json" else 'component "probe"' in err
