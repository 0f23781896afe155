"""An open ``/events/stream`` ends within seconds once its token is revoked, or its role or
scope changes (issue 14, 10), with the default recheck interval.

The API runs on a real uvicorn server on a loopback port (a thread of this process, so
the test can publish into the hub); the streams are read by httpx over the socket. Events
are published all along at ~50/s; a control stream with another token keeps receiving.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from gateway.api.app import create_app
from gateway.api.auth import issue_token, revoke_token
from gateway.api.models import ApiToken
from gateway.core.config import Settings
from gateway.notify.live import EventHub
from gateway.registry.models import Node
from gateway.runtime.schema import make_engine
from gateway.services.base import free_port
from tests.integration.test_api_common import community_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

C1_PATH = "/ST1/SQ1/G1/C1/B3/B3-2/"
RECHECK_S = Settings().api_token_recheck_s  # the default, not a test-only value
ENDS_WITHIN_S = RECHECK_S + 2.0


@dataclass
class Stream:
    """A stream read on a thread: each event's arrival time, and when the stream ended."""

    response: httpx.Response
    events: list[float] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended_at: float | None = None
    thread: threading.Thread | None = None

    def read(self) -> None:
        try:
            for line in self.response.iter_lines():
                if line.startswith("data: "):
                    self.events.append(time.monotonic())
                elif line.startswith(": "):
                    self.comments.append(line)
        except httpx.HTTPError:
            pass
        self.ended_at = time.monotonic()

    def after(self, moment: float) -> int:
        return sum(1 for t in self.events if t > moment)


@dataclass
class Server:
    """uvicorn serving the API on ``base``; ``hub`` is the live event hub."""

    base: str
    hub: EventHub
    engine: Engine
    tokens: dict[str, str]


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Server]:
    engine = make_engine(community_db(tmp_path_factory, tmp_path / "gateway.db"))
    tokens = {}
    with Session(engine) as session, session.begin():
        for name, role, node in [("revoked", "read_only", "C1"), ("control", "read_only", "C1")]:
            tokens[name] = issue_token(session, role, node, name).token
    hub = EventHub(keepalive_s=0.2)
    app = create_app(Settings(state_dir=tmp_path), engine, hub=hub)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uv.started, "uvicorn did not start"
    try:
        yield Server(f"http://127.0.0.1:{port}", hub, engine, tokens)
    finally:
        uv.should_exit = True
        hub.close()
        thread.join(10)
        engine.dispose()


def _open(server: Server, client: httpx.Client, token: str, *, query: bool = False) -> Stream:
    url = f"{server.base}/events/stream"
    headers = {} if query else {"Authorization": f"Bearer {token}"}
    params = {"access_token": token} if query else None
    request = client.build_request("GET", url, headers=headers, params=params)
    response = client.send(request, stream=True)
    assert response.status_code == 200
    stream = Stream(response)
    stream.thread = threading.Thread(target=stream.read, daemon=True)
    stream.thread.start()
    return stream


def _publishing(hub: EventHub, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set() and n < 10_000:
        n += 1
        hub.publish({"type": "test.tick", "n": n, "path": C1_PATH})
        stop.wait(0.02)


def _change_role(engine: Engine, prefix: str) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(ApiToken).where(ApiToken.prefix == prefix).values(role="admin"))


def _change_scope(engine: Engine, prefix: str) -> None:
    with Session(engine) as session, session.begin():
        node_id = session.scalar(select(Node.id).where(Node.code == "C2"))
        session.execute(update(ApiToken).where(ApiToken.prefix == prefix).values(node_id=node_id))


def _revoke(engine: Engine, prefix: str) -> None:
    with Session(engine) as session, session.begin():
        assert revoke_token(session, prefix)


CHANGES: dict[str, Callable[[Engine, str], None]] = {
    "revoked": _revoke,
    "role changed": _change_role,
    "scope changed": _change_scope,
}


@pytest.mark.parametrize("query", [False, True], ids=["header", "access_token"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_token_loses_its_open_stream_within_seconds(
    server: Server, change: str, query: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    publisher = threading.Thread(target=_publishing, args=(server.hub, stop), daemon=True)
    with httpx.Client(timeout=httpx.Timeout(5.0, read=5.0)) as client:
        target = _open(server, client, server.tokens["revoked"], query=query)
        control = _open(server, client, server.tokens["control"])
        publisher.start()
        try:
            _wait(lambda: len(target.events) >= 10 and len(control.events) >= 10, 10)
            changed_at = time.monotonic()
            CHANGES[change](server.engine, server.tokens["revoked"].split("_")[1])
            _wait(lambda: target.ended_at is not None, ENDS_WITHIN_S + 3)
            assert target.ended_at is not None
            took = target.ended_at - changed_at
            control_before = len(control.events)
            time.sleep(1.0)
            assert len(control.events) > control_before, "the other token's stream stopped too"
        finally:
            stop.set()
            publisher.join(5)
            target.response.close()
            control.response.close()
    with capsys.disabled():
        print(f"\ntoken {change}: stream ended after {took:.2f} s, {target.after(changed_at)} late")
    assert took < ENDS_WITHIN_S, f"stream ended {took:.1f} s after the token was {change}"
    assert target.ended_at is not None and target.after(target.ended_at) == 0
    late = target.after(changed_at)
    assert late <= (ENDS_WITHIN_S * 50) + 5  # only the recheck window, never beyond it
    assert any("stream closed" in c for c in target.comments), target.comments[-3:]
    if change == "revoked":
        headers = {"Authorization": f"Bearer {server.tokens['revoked']}"}
        again = httpx.get(f"{server.base}/events/stream", headers=headers, timeout=5)
        assert again.status_code == 401


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
