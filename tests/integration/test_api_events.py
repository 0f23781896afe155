"""The live event stream: scope filtering, recipients outside the scope left out, tokens in
the query for EventSource, Last-Event-ID replay.

Every read is bounded: the hub sends a keep-alive every 0.2 s, so the reader sees a line at
least that often and stops at its deadline (5 s) even when no event comes; the timeout
marker is the backstop should the stream stop sending anything at all.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from gateway.api.auth import Principal, authenticate
from gateway.api.routes.events import event_visible, redacted
from gateway.notify.live import format_frame
from tests.integration.test_api_alerts import SMOKE_C1, SMOKE_C2, OpsEnv, ops
from tests.integration.test_api_common import ApiEnv, env

__all__ = ["env", "ops"]

pytestmark = pytest.mark.timeout(60)

C1_PATH = "/ST1/SQ1/G1/C1/B3/B3-2/"
C2_PATH = "ST1/SQ1/G1/C2/B6/B6-1"


def read_frames(response: httpx.Response, want: int = 1, timeout_s: float = 5.0) -> list[Any]:
    """Event frames until ``want`` arrived or ``timeout_s`` passed (comments are skipped)."""
    deadline = time.monotonic() + timeout_s
    frames: list[dict[str, Any]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        key, found, value = line.partition(": ")
        if found and key in {"id", "event", "data"}:
            current[key] = value
        elif not line and "data" in current:
            frames.append({**current, "data": json.loads(current["data"])})
            current = {}
        if len(frames) >= want or time.monotonic() > deadline:
            break
    return frames


def stream(ops: OpsEnv, headers: dict[str, str], query: str = "") -> Any:
    """``GET /events/stream`` as a streamed response (use in ``with``)."""
    return ops.client.stream("GET", f"/events/stream{query}", headers=headers)


def test_a_compound_token_gets_only_events_in_its_scope(ops: OpsEnv) -> None:
    with stream(ops, ops.auth("manager", "C1")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        ops.hub.publish({"type": "test.out", "path": C2_PATH})
        ops.hub.publish({"type": "test.unplaced"})
        ops.hub.publish({"type": "test.in", "path": C1_PATH})
        frames = read_frames(response)
    assert [frame["event"] for frame in frames] == ["test.in"]
    assert frames[0]["data"] == {"type": "test.in", "path": C1_PATH}


def test_real_alert_events_are_filtered_and_recipients_outside_the_scope_left_out(
    ops: OpsEnv,
) -> None:
    with stream(ops, ops.auth("read_only", "C1")) as response:
        ops.smoke(SMOKE_C2)
        ops.smoke(SMOKE_C1)
        ops.orders.create_manual(
            title="lift", description="", node_code="B1-1", reporter="r", category="facility"
        )
        frames = read_frames(response, want=3)
    kinds = [frame["event"] for frame in frames]
    assert kinds == ["alert.firing", "workorder.opened", "workorder.opened"]
    assert frames[0]["data"]["alert"]["device_id"] == SMOKE_C1
    fire, lift = frames[1]["data"], frames[2]["data"]
    assert fire["order"]["node"] == "G1"  # owned above the compound, still its event
    assert fire["recipients"] == []  # the grid team at G1 is outside C1
    kept = {(p["node"], p["role"], p["cc"]) for p in lift["recipients"]}
    assert ("C1", "property_manager", False) in kept and ("B1", "building_head", True) in kept
    assert all(p["node"] in {"C1", "B1", "B1-1"} for p in lift["recipients"])
    ops.clock.advance(5)
    with stream(ops, ops.auth()) as response:
        ops.smoke(SMOKE_C1, level=0.5)  # a repeat: alert.repeat and workorder.occurrence
        frames = read_frames(response, want=2)
    roles = {person["role"] for frame in frames for person in frame["data"]["recipients"]}
    assert "grid_member" in roles  # a root token sees everybody notified


def test_token_in_the_query_for_event_source(ops: OpsEnv) -> None:
    token = ops.api.token("grid_member", "G1")
    with stream(ops, {}, f"?access_token={token}") as response:
        assert response.status_code == 200
        ops.hub.publish({"type": "test.in", "path": C2_PATH})
        assert [frame["event"] for frame in read_frames(response)] == ["test.in"]


@pytest.mark.parametrize(
    ("query", "headers", "fragment"),
    [
        ("", {}, "an API token is required"),
        ("?access_token=scc_nothing", {}, "not valid"),
        ("?access_token=x", {"Authorization": "Bearer nonsense"}, "not valid"),
    ],
)
def test_stream_without_a_valid_token_is_401(
    ops: OpsEnv, query: str, headers: dict[str, str], fragment: str
) -> None:
    response = ops.client.get(f"/events/stream{query}", headers=headers)
    assert response.status_code == 401
    assert fragment in response.json()["detail"]


def test_last_event_id_replays_what_was_missed_within_the_scope(ops: OpsEnv) -> None:
    seen = ops.hub.publish({"type": "test.seen", "path": C1_PATH})
    ops.hub.publish({"type": "test.out", "path": C2_PATH})
    missed = ops.hub.publish({"type": "test.missed", "node_path": C1_PATH})
    assert seen is not None and missed is not None
    headers = {**ops.auth("manager", "C1"), "Last-Event-ID": seen}
    with stream(ops, headers) as response:
        frames = read_frames(response)
    assert [(frame["id"], frame["event"]) for frame in frames] == [(missed, "test.missed")]


def test_stream_is_503_without_a_hub(env: ApiEnv) -> None:
    response = env.client.get("/events/stream", headers=env.auth())
    assert response.status_code == 503
    assert response.json() == {
        "detail": "live events are not available: this API runs without them"
    }


# --- the filter and the redaction, directly ----------------------------------------------------


@pytest.fixture
def c1(ops: OpsEnv) -> Principal:
    """A principal scoped at compound C1."""
    from sqlalchemy.orm import Session

    with Session(ops.api.engine) as session:
        return authenticate(session, ops.api.token("manager", "C1"))


@pytest.mark.parametrize(
    ("event", "visible"),
    [
        ({"path": C1_PATH}, True),
        ({"path": "ST1/SQ1/G1/C1"}, True),
        ({"node_path": ["ST1", "SQ1", "G1", "C1", "B1"]}, True),
        ({"alert": {"node_path": C1_PATH}}, True),
        ({"order": {"node_path": C2_PATH, "node": "C1"}}, True),  # owned inside the scope
        ({"order": {"node_path": C2_PATH, "node": "G1"}}, False),
        ({"path": C2_PATH}, False),
        ({"path": "/ST1/SQ1/G1/"}, False),  # above the compound
        ({"path": 42, "alert": "x"}, False),
        ({"type": "gateway.started"}, False),  # placed nowhere: root tokens only
    ],
)
def test_event_visibility(c1: Principal, event: dict[str, Any], visible: bool) -> None:
    assert event_visible(c1, event) is visible


def test_redaction_keeps_other_frames_as_they_are(c1: Principal) -> None:
    assert redacted(b"retry: 3000\n\n", c1) == b"retry: 3000\n\n"
    assert redacted(b": keep-alive\n\n", c1) == b": keep-alive\n\n"
    plain = format_frame("e-1", "x", b'{"path": "/C1/"}')
    assert redacted(plain, c1) == plain
    people = [{"node": "G1", "name": "a"}, {"node": "B1", "name": "b"}]
    frame = format_frame("e-2", "workorder.opened", json.dumps({"recipients": people}).encode())
    kept = redacted(frame, c1)
    assert kept.startswith(b"id: e-2\nevent: workorder.opened\ndata: ")
    assert json.loads(kept.split(b"data: ", 1)[1]) == {"recipients": [people[1]]}
