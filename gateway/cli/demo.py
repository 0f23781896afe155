"""``python -m gateway demo``: services, registry, gateway and a simulated community.

Prints what is flowing every few seconds until Ctrl-C (or ``--duration``), then stops the
fleet, the gateway and the services it started, leaving nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy.orm import Session

from devices import KINDS
from gateway.api.auth import issue_token
from gateway.core.config import Settings
from gateway.runtime.service import Gateway
from gateway.services.base import ServiceError, free_port, port_is_free
from gateway.services.influxdb import influx_query
from gateway.services.manager import Services, ServiceStatus

COMMUNITY = Path("fixtures/demo_community")
INCIDENTS = (
    "fire@B3-2-1001+20",
    "overflow@bin-C2-07+30",
    "opened@mh-C1-03+40",
    "throw@cam-B5-east+50",
)
PRINT_EVERY_S = 5.0
EXAMPLE_QUERY = "SELECT * FROM smoke WHERE state='alarm'"


def _pick_ports(args: argparse.Namespace) -> tuple[int, int]:
    """The requested ports, or free ones when something else already holds them."""
    status: dict[str, ServiceStatus] = Services(args.mqtt_port, args.influx_port).status(
        args.state_dir
    )
    ports = []
    for name, wanted in (("mosquitto", args.mqtt_port), ("influxdb", args.influx_port)):
        if status[name]["running"] and status[name]["port"]:
            ports.append(int(status[name]["port"] or wanted))
        elif port_is_free(wanted):
            ports.append(wanted)
        else:
            other = free_port()
            print(f"port {wanted} is taken by another program; {name} will use {other}")
            ports.append(other)
    return ports[0], ports[1]


def stored_points(url: str, database: str, since_ns: int) -> dict[str, int]:
    """Points per measurement stored since ``since_ns`` (the largest per-field count)."""
    names = ",".join(f'"{m}"' for m in (*KINDS, "events"))
    try:
        query = f"SELECT count(*) FROM {names} WHERE time >= {int(since_ns)}"  # noqa: S608
        body = influx_query(url, query, db=database, timeout=5)
    except ServiceError:
        return {}
    out: dict[str, int] = {}
    for series in body["results"][0].get("series", []):
        out[series["name"]] = max(v for v in series["values"][0][1:] if v is not None)
    return out


class Printer:
    """Prints rates, stored counts and dead letters."""

    def __init__(self, gateway: Gateway, influx_url: str) -> None:
        self.gateway = gateway
        self.influx_url = influx_url
        self.last = Counter[str]()
        self.last_t = time.monotonic()
        self.started_ns = time.time_ns()

    def print(self) -> None:
        """One block of status lines."""
        now = time.monotonic()
        counters = self.gateway.counters
        span = max(now - self.last_t, 1e-6)
        stored = stored_points(
            self.influx_url, self.gateway.settings.influx_database, self.started_ns
        )
        print(
            f"\n{time.strftime('%H:%M:%S')}  {'kind':13} {'msg/s':>7} {'received':>9} {'stored':>9}"
        )
        for kind in KINDS:
            rate = (counters.messages[kind] - self.last[kind]) / span
            received, kept = counters.messages[kind], stored.get(kind, 0)
            print(f"          {kind:13} {rate:7.1f} {received:9d} {kept:9d}")
        print(
            f"          {'events':13} {'':7} {'':9} {stored.get('events', 0):9d}  (online/offline)"
        )
        dead = ", ".join(f"{r}={n}" for r, n in sorted(counters.dead_letters.items())) or "none"
        print(f"          dead letters: {dead}")
        firing = self.gateway.rules.alerts.search(state="firing", limit=100_000)
        orders = self.gateway.rules.orders.search(limit=100_000)
        open_orders = [o for o in orders if o.state != "closed"]
        print(
            f"          alerts firing: {len(firing)} "
            f"({', '.join(sorted({a.rule_id for a in firing})) or 'none'}); "
            f"work orders open: {len(open_orders)}"
        )
        print(
            f"          spool: {self.gateway.spool.depth_bytes()} bytes waiting, "
            f"InfluxDB writes: {self.gateway.drainer.stats.write_requests}, "
            f"MQTT reconnects: {self.gateway.source.reconnects}"
        )
        self.last = Counter(counters.messages)
        self.last_t = now


def _fleet_command(args: argparse.Namespace, mqtt_port: int) -> list[str]:
    command = [
        sys.executable, "-m", "simulators", "fleet",
        "--community", str(COMMUNITY), "--port", str(mqtt_port), "--seed", "1",
        "--interval", str(args.interval), "--bad-rate", str(args.bad_rate),
        "--stats-every", "3600",
    ]  # fmt: skip
    for incident in INCIDENTS:
        command += ["--incident", incident]
    return command


def run_demo(args: argparse.Namespace) -> int:
    """Run everything; return the exit code."""
    state_dir: Path = args.state_dir
    mqtt_port, influx_port = _pick_ports(args)
    services = Services(mqtt_port, influx_port)
    before = services.status(state_dir)
    try:
        started = services.up(state_dir)
    except ServiceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    influx_url = started["influxdb"]["url"]
    try:
        return _run_with_services(args, state_dir, mqtt_port, influx_url)
    finally:
        print("\nstopping services …")
        if not (before["mosquitto"]["running"] and before["influxdb"]["running"]):
            for name, line in services.down(state_dir).items():
                print(f"  {name}: {line}")


def _run_with_services(
    args: argparse.Namespace, state_dir: Path, mqtt_port: int, influx_url: str
) -> int:
    api_port = args.api_port if port_is_free(args.api_port) else free_port()
    settings = Settings(
        name="demo", state_dir=state_dir, mqtt_port=mqtt_port, influx_url=influx_url,
        influx_database="scc", stats_interval_s=5, api_port=api_port,
    )  # fmt: skip
    _log_to_file(state_dir / "gateway.log")
    gateway = Gateway(settings)
    nodes, devices = gateway.registry.load_community(COMMUNITY)
    gateway.pipeline.invalidate()
    print(f"registry: {nodes} hierarchy nodes, {devices} devices from {COMMUNITY}")
    with Session(gateway.engine) as session, session.begin():
        token = issue_token(session, "admin", "ST1", f"demo {time.strftime('%F %T')}").token
    _where_to_look(state_dir, mqtt_port, influx_url, api_port, token)
    fleet_log = (state_dir / "fleet.log").open("w")
    fleet = subprocess.Popen(_fleet_command(args, mqtt_port), stdout=fleet_log, stderr=fleet_log)
    try:
        asyncio.run(_run_gateway(gateway, influx_url, args.duration, fleet))
    finally:
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
            try:
                fleet.wait(15)
            except subprocess.TimeoutExpired:
                fleet.kill()
        fleet_log.close()
    return 0


async def _run_gateway(
    gateway: Gateway, influx_url: str, duration: float, fleet: subprocess.Popen[bytes]
) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.stop)
    printer = Printer(gateway, influx_url)

    async def report() -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(PRINT_EVERY_S)
            await asyncio.to_thread(printer.print)
            if fleet.poll() is not None:
                print(f"the simulated fleet exited with {fleet.returncode}; see fleet.log")
                gateway.stop()
            if duration and time.monotonic() - started >= duration:
                gateway.stop()

    task = asyncio.create_task(report())
    try:
        await gateway.run()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _log_to_file(path: Path) -> None:
    """Keep the console for the summary table; the gateway's log goes to a file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _where_to_look(
    state_dir: Path, mqtt_port: int, influx_url: str, api_port: int, token: str
) -> None:
    measurements = ", ".join((*KINDS, "events", "gateway_stats"))
    print(
        f"""
Where to look
  MQTT broker   127.0.0.1:{mqtt_port}   (watch: mosquitto_sub -p {mqtt_port} -t 'scc/v1/#' -v)
  InfluxDB      {influx_url}   database "scc", measurements {measurements}
                curl -G {influx_url}/query --data-urlencode db=scc \\
                     --data-urlencode "q={EXAMPLE_QUERY}"
  dead letters  .venv/bin/python -m gateway deadletter list --state-dir {state_dir}
  web page      http://127.0.0.1:{api_port}/ui/  (alert inbox, work orders, community)
  REST API      http://127.0.0.1:{api_port}/docs  (OpenAPI); this demo's admin token:
                curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{api_port}/alerts
  logs          {state_dir / "gateway.log"}, {state_dir / "fleet.log"}
  scripted incidents: {", ".join(INCIDENTS)}  (name@device-or-location+seconds)
Press Ctrl-C to stop; everything started here is stopped again.
"""
    )
