"""The long-lived development pair under ``var/``: Mosquitto and InfluxDB started, stopped
and inspected by ``python -m gateway services up|down|status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal, TypedDict

from gateway.services.base import (
    LOOPBACK,
    START_TIMEOUT,
    ManagedProcess,
    PortInUseError,
    ServerConfig,
    ServiceError,
    free_port,
    port_is_free,
)
from gateway.services.influxdb import InfluxConfig
from gateway.services.mosquitto import MosquittoConfig


class ServiceStatus(TypedDict):
    """What :meth:`Services.status` reports for one server."""

    running: bool
    pid: int | None
    port: int | None
    answering: bool
    url: str | None


class UpResult(TypedDict):
    """What :meth:`Services.up` did for one server."""

    action: Literal["started", "reused"]
    pid: int
    port: int
    url: str


SERVICE_NAMES = ("mosquitto", "influxdb")


class Services:
    """Start, stop and inspect the Mosquitto + InfluxDB pair kept under one state directory.

    Layout: ``<state_dir>/mosquitto/``, ``<state_dir>/influxdb/`` and
    ``<state_dir>/services.json`` (ports, pids and URLs for other tools to read).
    """

    def __init__(
        self, mqtt_port: int = 1883, influx_port: int = 8086, *, timeout: float = START_TIMEOUT
    ) -> None:
        self.ports = {"mosquitto": mqtt_port, "influxdb": influx_port}
        self.timeout = timeout

    def up(self, state_dir: Path) -> dict[str, UpResult]:
        """Start both servers, reusing any that already run from ``state_dir`` and answer."""
        results: dict[str, UpResult] = {}
        for name in SERVICE_NAMES:
            proc, action = self._up_one(name, state_dir)
            results[name] = UpResult(action=action, pid=proc.pid or 0, port=proc.port, url=proc.url)
            self._record(state_dir, name, proc)
        return results

    def down(self, state_dir: Path) -> dict[str, str]:
        """Stop both servers named by their pid files; return one line per server."""
        results = {}
        for name in SERVICE_NAMES:
            proc = ManagedProcess.attach(self._config(name, state_dir))
            if proc is None:
                results[name] = "not running"
            else:
                pid = proc.pid
                proc.stop()
                results[name] = f"stopped (pid {pid})"
            self._record(state_dir, name, proc)
        return results

    def status(self, state_dir: Path) -> dict[str, ServiceStatus]:
        """Report whether each server runs, and whether it answers on its recorded port."""
        results = {}
        records = _read_records(state_dir)
        for name in SERVICE_NAMES:
            config = self._config(name, state_dir)
            proc = ManagedProcess.attach(config)
            record = records.get(name, {})
            running = proc is not None
            results[name] = ServiceStatus(
                running=running,
                pid=proc.pid if proc else None,
                port=record.get("port"),
                answering=running and config.probe(),
                url=record.get("url"),
            )
        return results

    def _config(self, name: str, state_dir: Path, *, fresh: bool = False) -> ServerConfig:
        """Config for ``name``: recorded ports unless ``fresh`` (then the requested ones)."""
        record = {} if fresh else _read_records(state_dir).get(name, {})
        port = int(record.get("port") or self.ports[name])
        directory = Path(state_dir) / name
        if name == "mosquitto":
            return MosquittoConfig(port=port, state_dir=directory)
        bind_port = int(record.get("bind_port") or 0) or free_port()
        while bind_port == port:
            bind_port = free_port()
        return InfluxConfig(port=port, state_dir=directory, bind_port=bind_port)

    def _up_one(
        self, name: str, state_dir: Path
    ) -> tuple[ManagedProcess, Literal["started", "reused"]]:
        existing = ManagedProcess.attach(self._config(name, state_dir))
        if existing is not None:
            existing.wait_ready(self.timeout)  # it may still be starting
            return existing, "reused"
        config = self._config(name, state_dir, fresh=True)
        if not port_is_free(config.port):
            flag = "--mqtt-port" if name == "mosquitto" else "--influx-port"
            raise PortInUseError(
                f"port {config.port} on {LOOPBACK} is already in use by another program "
                f"(not by the {config.binary} of {state_dir}); stop it or pass {flag}"
            )
        proc = ManagedProcess(config, start_timeout=self.timeout)
        proc.start()
        return proc, "started"

    def _record(self, state_dir: Path, name: str, proc: ManagedProcess | None) -> None:
        records = _read_records(state_dir)
        entry = records.setdefault(name, {})
        entry["pid"] = proc.pid if proc else None
        if proc is not None:
            config = proc.config
            entry |= {"port": config.port, "url": config.url, "state_dir": str(config.state_dir)}
            entry["config"] = str(config.config_path)
            entry["logs"] = [str(p) for p in config.log_paths]
            if isinstance(config, InfluxConfig):
                entry["bind_port"] = config.bind_port
        path = Path(state_dir) / "services.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)


def _read_records(state_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((Path(state_dir) / "services.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``services up|down|status``; its ``func`` default runs it and returns the exit code."""
    parser = subparsers.add_parser(
        "services",
        help="run local Mosquitto and InfluxDB for development and demos",
        description="Start, stop or inspect a local Mosquitto and InfluxDB on 127.0.0.1. "
        "`status` exits 3 when a server is not running and answering.",
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, default=Path("var"), help="default: ./var")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="default: 1883")
    parser.add_argument("--influx-port", type=int, default=8086, help="default: 8086")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Carry out a parsed ``services`` command, print the result, return the exit code."""
    services = Services(args.mqtt_port, args.influx_port)
    state_dir: Path = args.state_dir
    try:
        if args.action == "up":
            for name, up in services.up(state_dir).items():
                print(f"{name:<10} {up['action']:<8} pid {up['pid']:<8} {up['url']}")
        elif args.action == "down":
            for name, line in services.down(state_dir).items():
                print(f"{name:<10} {line}")
        else:
            return _print_status(services.status(state_dir))
    except ServiceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _print_status(statuses: dict[str, ServiceStatus]) -> int:
    print(f"{'service':<10} {'running':<8} {'answering':<10} {'pid':<8} {'port':<6} url")
    for name, st in statuses.items():
        print(
            f"{name:<10} {'yes' if st['running'] else 'no':<8} "
            f"{'yes' if st['answering'] else 'no':<10} {st['pid'] or '-'!s:<8} "
            f"{st['port'] or '-'!s:<6} {st['url'] or '-'}"
        )
    healthy = all(st["running"] and st["answering"] for st in statuses.values())
    return 0 if healthy else 3
