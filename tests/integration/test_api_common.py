"""API helpers shared by the ``test_api_*`` modules, and behaviour common to every route:
authentication, error bodies, malformed requests, health, metrics, OpenAPI, token CLI.

Each test gets its own SQLite copy of the demo community (copied from one template
built per session, since loading 2,000 devices takes half a second).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.api.app import create_app
from gateway.api.auth import issue_token, revoke_token
from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine

with warnings.catch_warnings():
    # Starlette 1.x wants httpx2 for its TestClient and warns (an error under our pytest
    # settings) when it falls back to httpx; either works for these tests.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
COMMUNITY = ROOT / "fixtures" / "demo_community"


@dataclass
class ApiEnv:
    """An app over a private copy of the demo community, with a client and token maker."""

    engine: Engine
    app: FastAPI
    client: TestClient
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, role: str = "admin", node: str = "ST1") -> str:
        """A token of ``role`` scoped at ``node`` (one per pair, made on first use)."""
        if (role, node) not in self.tokens:
            with Session(self.engine) as session, session.begin():
                self.tokens[role, node] = issue_token(session, role, node, f"test {role}").token
        return self.tokens[role, node]

    def auth(self, role: str = "admin", node: str = "ST1") -> dict[str, str]:
        """``Authorization`` header of :meth:`token`."""
        return {"Authorization": f"Bearer {self.token(role, node)}"}


def community_db(tmp_path_factory: pytest.TempPathFactory, target: Path) -> str:
    """A SQLite URL of a fresh copy of the demo community at ``target``."""
    template = tmp_path_factory.getbasetemp() / "api-template.db"
    if not template.exists():
        engine = make_engine(f"sqlite:///{template}")
        Registry(engine).load_community(COMMUNITY)
        engine.dispose()
    with sqlite3.connect(template) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


def make_env(
    tmp_path_factory: pytest.TempPathFactory, directory: Path, **kwargs: Any
) -> Iterator[ApiEnv]:
    """Yield an :class:`ApiEnv`; ``kwargs`` go to ``create_app``."""
    engine = make_engine(community_db(tmp_path_factory, directory / "gateway.db"))
    app = create_app(Settings(state_dir=directory), engine, **kwargs)
    with TestClient(app) as client:
        yield ApiEnv(engine, app, client)
    engine.dispose()


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[ApiEnv]:
    """The API over a private demo community, no broker, no InfluxDB."""
    yield from make_env(tmp_path_factory, tmp_path)


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    """One API for the whole module (for property-based runs)."""
    yield from make_env(tmp_path_factory, tmp_path_factory.mktemp("api-shared"))


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "token is required"),
        ({"Authorization": "Bearer nonsense"}, "not valid"),
        ({"Authorization": "Bearer scc_00000000_" + "A" * 43}, "not valid"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "token is required"),
        ({"Authorization": ("Bearer " + "ü" * 300).encode()}, "not valid"),
    ],
)
def test_missing_or_bad_token_is_401(
    env: ApiEnv, headers: dict[str, str | bytes], fragment: str
) -> None:
    response = env.client.get("/devices", headers=headers)
    assert response.status_code == 401
    assert fragment in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_token_is_401(env: ApiEnv) -> None:
    headers = env.auth()
    assert env.client.get("/auth/whoami", headers=headers).status_code == 200
    prefix = env.token().split("_")[1]
    with Session(env.engine) as session, session.begin():
        assert revoke_token(session, prefix)
    assert env.client.get("/auth/whoami", headers=headers).status_code == 401


def test_whoami(env: ApiEnv) -> None:
    body = env.client.get("/auth/whoami", headers=env.auth("manager", "C1")).json()
    assert body["role"] == "manager"
    assert body["scope"] == "C1"
    assert "staff:write" in body["permissions"]
    assert "devices:write" not in body["permissions"]


def test_role_without_permission_is_403_with_message(env: ApiEnv) -> None:
    response = env.client.delete("/devices/smoke-B1-1-101", headers=env.auth("read_only"))
    assert response.status_code == 403
    assert response.json() == {"detail": "role 'read_only' may not write devices"}


JSON = {"content-type": "application/json"}


# --- malformed requests never give a 500 -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        ("post", "/devices", {"content": b'{"device_id": ', "headers": JSON}, 422, "JSON decode"),
        ("post", "/devices", {"content": b'{"device_id": '}, 422, "body"),
        ("post", "/devices", {"content": b"\xff\xfe", "headers": JSON}, 422, "JSON decode"),
        ("post", "/devices", {"json": [1, 2]}, 422, "body"),
        (
            "post",
            "/devices",
            {"content": b"device_id=x", "headers": {"content-type": "text/plain"}},
            422,
            "body",
        ),
        ("post", "/devices", {"json": {"device_id": "x"}}, 422, "body.kind: Field required"),
        ("patch", "/devices/smoke-B1-1-101", {"json": {"node": "C2"}}, 422, "body.node"),
        ("get", "/devices?limit=100000", {}, 422, "query.limit"),
        ("get", "/devices?offset=-1", {}, 422, "query.offset"),
        ("get", "/devices?kind=lamp", {}, 422, "query.kind"),
        ("get", "/devices?status=broken", {}, 422, "query.status"),
        ("get", "/devices/smoke-B1-1-101/readings?minutes=abc", {}, 422, "query.minutes"),
        ("get", "/devices/" + "9" * 5000, {}, 404, "not found"),
        ("get", "/devices/%E7%83%9F%E6%84%9F", {}, 404, "not found"),
        ("get", "/devices/a%00b", {}, 404, "not found"),
        ("get", "/nodes/C1/staff/99999999999999999999999", {}, 405, "Method Not Allowed"),
        ("patch", "/nodes/C1/staff/99999999999999999999999", {"json": {}}, 422, "path.staff_id"),
        ("delete", "/nodes/C1/staff/-5", {}, 422, "path.staff_id"),
        ("get", "/nowhere", {}, 404, "Not Found"),
        ("put", "/devices", {}, 405, "Method Not Allowed"),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(
    env: ApiEnv, method: str, path: str, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    headers = {**env.auth(), **kwargs.pop("headers", {})}
    response = env.client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert fragment in detail


def test_validation_error_lists_fields(env: ApiEnv) -> None:
    response = env.client.post(
        "/devices", headers=env.auth(), json={"device_id": "bad id", "kind": "lamp", "node": "B1"}
    )
    assert response.status_code == 422
    body = response.json()
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "device_id"), ("body", "kind")}
    assert "body.device_id: Value error, device_id 'bad id' has ' '" in body["detail"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
DEVICE_KEYS = ("device_id", "kind", "node", "model", "codec", "location", "params", "installed_at")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(
        [
            ("post", "/devices"),
            ("patch", "/devices/smoke-B1-1-101"),
            ("post", "/devices/smoke-B1-1-101/move"),
            ("post", "/devices/import"),
            ("post", "/nodes/C1/staff"),
        ]
    ),
    body=st.one_of(
        json_values, st.fixed_dictionaries({}, optional={k: json_values for k in DEVICE_KEYS})
    ),
)
def test_random_json_bodies_never_give_5xx(
    shared_env: ApiEnv, route: tuple[str, str], body: Any
) -> None:
    method, path = route
    response = shared_env.client.request(method, path, headers=shared_env.auth(), json=body)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(segment=st.text(min_size=1, max_size=300).filter(lambda s: s not in {".", ".."}))
def test_random_path_segments_never_give_5xx(shared_env: ApiEnv, segment: str) -> None:
    for template in ("/devices/{}", "/devices/{}/dead-letters", "/nodes/{}", "/device-types/{}"):
        path = template.format(urllib.parse.quote(segment, safe=""))
        response = shared_env.client.get(path, headers=shared_env.auth())
        assert response.status_code < 500


# --- health, metrics, OpenAPI ----------------------------------------------------------------


def test_health_needs_no_token(env: ApiEnv) -> None:
    assert env.client.get("/health").json() == {"status": "ok"}
    assert env.client.get("/health/ready").json() == {"status": "ok", "database": "ok"}


def test_ready_is_503_when_the_database_is_gone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    app = create_app(Settings(state_dir=tmp_path), engine)
    (tmp_path / "x.db").unlink()
    (tmp_path / "x.db").mkdir()  # a directory where the file was: no connection can open it
    engine.dispose()
    with TestClient(app) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert "database unavailable" in response.json()["detail"]


def test_metrics_in_prometheus_format(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    values = {"scc_messages_total": 12, "scc_spool_bytes": 1.5, "bad name": 3}
    for api in make_env(tmp_path_factory, tmp_path, metrics_source=lambda: values):
        response = api.client.get("/metrics", headers=api.auth("read_only", "ST1"))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE scc_messages_total counter\nscc_messages_total 12\n" in response.text
        assert "# TYPE scc_spool_bytes gauge\nscc_spool_bytes 1.5\n" in response.text
        assert "bad name" not in response.text


def test_metrics_default_is_empty_and_needs_a_root_token(env: ApiEnv) -> None:
    assert env.client.get("/metrics", headers=env.auth()).text == ""
    assert env.client.get("/metrics").status_code == 401
    response = env.client.get("/metrics", headers=env.auth("admin", "C1"))
    assert response.status_code == 403
    assert "street root" in response.json()["detail"]


def test_openapi_documents_every_route(env: ApiEnv) -> None:
    schema = env.client.get("/openapi.json").json()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    assert len(operations) >= 18
    for operation in operations:
        assert operation["tags"] and operation["summary"], operation
        assert (
            "200" in operation["responses"]
            or "201" in operation["responses"]
            or "204" in operation["responses"]
        )
    assert "DeviceCreate" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# --- token CLI -------------------------------------------------------------------------------


def _cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_token_cli_prints_the_token_once(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    community_db(tmp_path_factory, tmp_path / "gateway.db")
    made = _cli("create", "--role", "admin", "--node", "ST1", "--name", "ops", state_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("scc_") and "shown once" in made.stderr
    listed = _cli("list", state_dir=tmp_path)
    assert token.split("_")[1] in listed.stdout and token not in listed.stdout
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    with TestClient(create_app(Settings(state_dir=tmp_path), engine)) as client:
        who = client.get("/auth/whoami", headers={"Authorization": f"Bearer {token}"})
        assert who.json()["scope"] == "ST1"
    bad = _cli("create", "--role", "admin", "--node", "NOPE", "--name", "x", state_dir=tmp_path)
    assert bad.returncode == 2 and "NOPE" in bad.stderr
