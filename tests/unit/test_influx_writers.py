"""The exact HTTP requests the v1 and v2 writers send, against a local recording server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.storage.influx import V1Target, V1Writer, V2Target, V2Writer, WriteError


class Recorder(BaseHTTPRequestHandler):
    """Records each request; answers with the status queued in ``server.replies``."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        server: Any = self.server
        server.requests.append((self.path, dict(self.headers), body))
        status, text = server.replies.pop(0) if server.replies else (204, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.requests, httpd.replies = [], []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


BODY = b'smoke,device_id=s1 state="normal",smoke=0.02 1700000000000000000'


def url(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_v1_request(server: Any) -> None:
    writer = V1Writer(V1Target(url(server), "scc", "autogen", "gw", "secret"))
    writer.write(BODY)
    writer.close()
    ((path, headers, body),) = server.requests
    assert path == "/write?db=scc&precision=ns&rp=autogen"
    assert headers["Authorization"] == "Basic Z3c6c2VjcmV0"
    assert body == BODY


def test_v2_request(server: Any) -> None:
    writer = V2Writer(V2Target(url(server), "acme", "sensors", "tok-123"))
    writer.write(BODY)
    writer.close()
    ((path, headers, body),) = server.requests
    assert path.startswith("/api/v2/write?")
    query = dict(part.split("=", 1) for part in path.split("?", 1)[1].split("&"))
    assert query == {"org": "acme", "bucket": "sensors", "precision": "ns"}
    assert headers["Authorization"] == "Token tok-123"
    assert headers["Content-Type"].startswith("text/plain")
    assert body == BODY


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (503, True)])
@pytest.mark.parametrize("version", [1, 2])
def test_errors_are_classified(server: Any, version: int, status: int, retryable: bool) -> None:
    server.replies.append((status, b'{"error":"nope"}'))
    writer: V1Writer | V2Writer = (
        V1Writer(V1Target(url(server)))
        if version == 1
        else V2Writer(V2Target(url(server), "o", "b", "t"))
    )
    with pytest.raises(WriteError) as caught:
        writer.write(BODY)
    writer.close()
    assert caught.value.retryable is retryable


def test_unreachable_is_retryable() -> None:
    writer = V1Writer(V1Target("http://127.0.0.1:9", timeout_s=1))
    with pytest.raises(WriteError) as caught:
        writer.write(BODY)
    assert caught.value.retryable


def test_v1_creates_a_missing_database_and_asks_for_a_retry(server: Any) -> None:
    server.replies += [(404, b'{"error":"database not found: \\"scc\\""}'), (200, b"{}")]
    writer = V1Writer(V1Target(url(server), "scc"))
    with pytest.raises(WriteError) as caught:
        writer.write(BODY)
    writer.close()
    assert caught.value.retryable
    path, _, body = server.requests[1]
    assert path == "/query" and body == b"q=CREATE+DATABASE+%22scc%22"
