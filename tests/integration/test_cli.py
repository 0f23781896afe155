"""The command line: registry loading, dead-letter list / show / replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.core.config import Settings
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess

from .gwtools import publish_all, rows, running, wait_for
from .test_ingest_end_to_end import DEVICES_CSV, HIERARCHY

COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"


def test_registry_load_demo_community(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "--state-dir", str(tmp_path), "load", str(COMMUNITY)]) == 0
    assert "2000 devices" in capsys.readouterr().out
    assert main(["registry", "--state-dir", str(tmp_path), "stats"]) == 0
    out = capsys.readouterr().out
    for line in (
        "devices.smoke                1800",
        "nodes.building               20",
        "nodes.compound               4",
        "nodes.grid                   2",
    ):
        assert line in out


def test_registry_load_refuses_bad_rows_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "community"
    folder.mkdir()
    (folder / "hierarchy.yaml").write_text((COMMUNITY / "hierarchy.yaml").read_text())
    (folder / "devices.csv").write_text(
        "device_id,kind,model,codec,node,location,params,installed_at\n"
        "ok-1,smoke,X,json,B1-1,101,,\n"
        "bad/id,smoke,X,json,B1-1,101,,\n"
        "lamp-1,lamp,X,json,B1-1,101,,\n"
        "bin-9,bin,X,em310-tilt,C1,,,\n"
        "smoke-9,smoke,X,json,NOWHERE,,,\n"
        "smoke-10,smoke,X,json,B1-1,,depth,\n"
    )
    assert main(["registry", "--state-dir", str(tmp_path / "state"), "load", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "line 3: device_id 'bad/id'" in err
    assert "line 4: kind 'lamp' unknown" in err
    assert "line 5: codec 'em310-tilt' not available for bin" in err
    assert "line 6: node 'NOWHERE' not in the hierarchy" in err
    assert "line 7: params part 'depth' is not key=value" in err
    main(["registry", "--state-dir", str(tmp_path / "state"), "stats"])
    assert "devices." not in capsys.readouterr().out


@pytest.mark.integration
def test_dead_letters_listed_shown_and_replayed(
    tmp_path: Path,
    mosquitto: ManagedProcess,
    influxdb: ManagedProcess,
    influx_db: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        name="cli",
        state_dir=tmp_path,
        mqtt_port=mosquitto.port,
        influx_url=influxdb.url,
        influx_database=influx_db,
        stats_interval_s=3600,
    )
    gateway = Gateway(settings)
    gateway.registry.load_hierarchy(HIERARCHY)
    gateway.pipeline.lookup_retry_s = 0
    state = ["--state-dir", str(tmp_path)]
    with running(gateway):
        publish_all(
            mosquitto.port,
            [
                ("scc/v1/smoke-1/telemetry", b'{"state":"normal","seq":7}'),
                ("scc/v1/smoke-1/telemetry", b'{"state":"normal","smoke":5}'),
            ],
        )
        wait_for(lambda: sum(gateway.counters.dead_letters.values()) == 2, 20, "two dead letters")

        assert main(["deadletter", *state, "list"]) == 0
        out = capsys.readouterr().out
        assert out.count("unknown_device") >= 2 and "totals: unknown_device=2" in out
        letter_id = gateway.dead_letters.list()[0].id
        assert main(["deadletter", *state, "show", str(letter_id)]) == 0
        assert '"smoke":5' in capsys.readouterr().out

        (tmp_path / "devices.csv").write_text(DEVICES_CSV)
        gateway.registry.load_devices_csv(tmp_path / "devices.csv")
        assert (
            main(
                [
                    "deadletter",
                    *state,
                    "--mqtt-port",
                    str(mosquitto.port),
                    "replay",
                    "--reason",
                    "unknown_device",
                ]
            )
            == 0
        )
        assert "replayed 2 dead letters" in capsys.readouterr().out
        # the valid one is stored now; the out-of-range one comes back as a new dead letter
        wait_for(lambda: gateway.counters.dead_letters["out_of_range"] == 1, 20, "re-rejected")
        wait_for(gateway.drainer.drained, 20, "drained")
    (point,) = rows(influxdb.url, influx_db, "smoke")
    assert point["seq"] == 7 and point["unit"] == "B1-1"
    assert all(letter.replayed_at for letter in gateway.dead_letters.list(reason="unknown_device"))
    assert main(["deadletter", *state, "show", "999999"]) == 2
