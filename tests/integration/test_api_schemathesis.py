"""Schemathesis over the API's own OpenAPI document: no request it can generate gets a 5xx.

The app is built once at import (schemathesis parametrizes from a schema object); it runs
over a private copy of the demo community in a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy.orm import Session

from gateway.alerting.rulestage import RuleStage
from gateway.api.app import create_app
from gateway.api.auth import issue_token
from gateway.core.clock import SystemClock
from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine

pytestmark = pytest.mark.integration

_DIR = Path(tempfile.mkdtemp(prefix="scc-schemathesis-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
_ENGINE = make_engine(f"sqlite:///{_DIR / 'gateway.db'}")
Registry(_ENGINE).load_community(
    Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
)
(_DIR / "rules").mkdir()
_RULES = RuleStage(_ENGINE, SystemClock(), _DIR / "rules", {}, lambda event: None)


def _no_readings(device_id: str, kind: str, minutes: int) -> list[dict[str, Any]]:
    return []


_APP = create_app(
    Settings(state_dir=_DIR, rules_dir=_DIR / "rules"),
    _ENGINE,
    influx_reader=_no_readings,
    rules=_RULES,
    on_rules_changed=lambda: None,  # no gateway loop here: rule writes are checked only
)
with Session(_ENGINE) as _session, _session.begin():
    _TOKEN = issue_token(_session, "admin", "ST1", "schemathesis").token

# The event stream never ends by design (tests/integration/test_api_events.py covers it).
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP).exclude(path="/events/stream")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {_TOKEN}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
