"""The gateway's MQTT client id: one function, stable per state directory, not guessable."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from gateway.core.config import Settings, gateway_client_id


def test_the_default_id_is_random_and_kept(tmp_path: Path) -> None:
    first = Settings(state_dir=tmp_path / "a", name="gw1").client_id
    assert re.fullmatch(r"scc-gateway-gw1-[0-9a-f]{16}", first)
    assert Settings(state_dir=tmp_path / "a", name="gw1").client_id == first  # a restart
    assert Settings(state_dir=tmp_path / "b", name="gw1").client_id != first  # another site
    assert (tmp_path / "a" / "mqtt" / "gw1.client-id").read_text().strip() == first


def test_an_explicit_id_wins(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, name="gw1", mqtt_client_id="gw-reserved")
    assert settings.client_id == "gw-reserved"
    assert not (tmp_path / "mqtt").exists()


def test_a_state_dir_of_an_earlier_version_keeps_its_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spool" / "gw1").mkdir(parents=True)  # that version's spool: it ran here
    (tmp_path / "spool" / "gw1" / "cursor").write_text("1 0")
    (tmp_path / "spool" / "gw2").mkdir()  # only opened (empty): no earlier run
    (tmp_path / "spool" / "gw2" / "seg-000000000001.spool").write_bytes(b"")
    assert gateway_client_id(tmp_path, "gw1") == "scc-gateway-gw1"
    assert "guessable" in caplog.text
    assert gateway_client_id(tmp_path, "gw2").startswith("scc-gateway-gw2-")


def test_processes_starting_at_once_agree(tmp_path: Path) -> None:
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda: ids.append(gateway_client_id(tmp_path, "w")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [p.name for p in (tmp_path / "mqtt").iterdir()] == ["w.client-id"]
