"""A full-duplex HTTP/1.1 POST: the body is sent on one thread while the response is read.

Most clients (httpx, http.client) send the whole request before reading the
response. Against a guest that streams its request body back (an echo), the
response then fills the socket buffers, the guest's writes wait for the
client, it stops reading, and both ends wait until the deadline. A streaming
client reads while it sends.
"""

from __future__ import annotations

import socket
import threading


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed mid-response")
        buf += data
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed mid-response")
        buf += data
    out = bytes(buf[:n])
    del buf[:n]
    return out


def post(base_url: str, path: str, body: bytes,
         timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """POST `body` to `path`; the status, headers (lowercase names) and body."""
    hostname, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((hostname, int(port)), timeout=timeout) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)))
        sender = threading.Thread(target=sock.sendall, args=(body,), daemon=True)
        sender.start()
        buf = bytearray()
        status = int(_read_line(sock, buf).split()[1])
        headers = {}
        while line := _read_line(sock, buf):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while size := int(_read_line(sock, buf).split(b";")[0], 16):
                parts.append(_read_exact(sock, buf, size))
                _read_exact(sock, buf, 2)
            content = b"".join(parts)
        else:
            content = _read_exact(sock, buf, int(headers.get("content-length", "0")))
        sender.join(timeout)
    return status, headers, content
