"""Command line: ``python -m gateway <command>``.

Commands: ``services up|down|status``, ``registry load|stats``, ``run``,
``deadletter list|show|replay``, ``token create|list|revoke``, ``demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.core.config import Settings, load_settings
from gateway.registry.device_ids import reserved_for
from gateway.registry.store import Registry, RegistryError
from gateway.runtime.schema import make_engine
from gateway.services import manager as services
from gateway.sources.mqtt.large import is_truncated
from gateway.storage.deadletter import DeadLetterStore

log = logging.getLogger("gateway")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "state_dir": getattr(args, "state_dir", None),
        "mqtt_host": getattr(args, "mqtt_host", None),
        "mqtt_port": getattr(args, "mqtt_port", None),
        "influx_url": getattr(args, "influx_url", None),
        "influx_database": getattr(args, "influx_database", None),
        "name": getattr(args, "name", None),
        "api_port": getattr(args, "api_port", None),
        "rules_dir": getattr(args, "rules_dir", None),
        "workers": getattr(args, "workers", None),
        "worker_index": getattr(args, "worker_index", None),
        "partitioned": getattr(args, "partitioned", None),
        "rule_partitions": getattr(args, "rule_partitions", None),
        "share_group": getattr(args, "share_group", None),
    }
    return load_settings(getattr(args, "config", None), overrides)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--state-dir", type=Path, help="state directory (default var/)")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT/SIGTERM."""
    from gateway.runtime.service import Gateway, exit_watchdog

    settings = _settings(args)
    gateway = Gateway(settings)

    def on_signal() -> None:
        if not gateway.stopping:  # the shutdown bound, even if a thread is stuck
            exit_watchdog(settings.shutdown_timeout_s + 5)
        gateway.stop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        if settings.worker_mode:
            log.info(
                "worker %d of %d, %d rule partitions, shared group %s",
                settings.worker_index,
                settings.workers,
                settings.rule_partitions,
                settings.share_group,
            )
        log.info(
            "gateway %s: mqtt %s:%s → influx %s (spool %s)",
            settings.name,
            settings.mqtt_host,
            settings.mqtt_port,
            settings.influx_url,
            settings.spool_dir,
        )
        await gateway.run()

    asyncio.run(main())
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    """Load a community fixture, or print registry counts."""
    settings = _settings(args)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(make_engine(settings.database_url), reserved_for(settings))
    if args.action == "load":
        try:
            nodes, devices = registry.load_community(args.path)
        except RegistryError as err:
            for problem in err.problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        print(f"loaded {nodes} hierarchy nodes and {devices} devices from {args.path}")
        return 0
    for key, value in sorted(registry.counts().items()):
        print(f"{key:28} {value}")
    return 0


def cmd_deadletter(args: argparse.Namespace) -> int:
    """Inspect and replay dead letters."""
    settings = _settings(args)
    store = DeadLetterStore(make_engine(settings.database_url))
    if args.action == "list":
        letters = store.list(args.reason, args.device, args.limit)
        print(f"{'id':>7}  {'received (UTC)':19}  {'reason':18} {'device':24} detail")
        for item in letters:
            replayed = " [replayed]" if item.replayed_at else ""
            print(
                f"{item.id:>7}  {item.received_at:%Y-%m-%d %H:%M:%S}  {item.reason:18} "
                f"{(item.device_id or '-'):24} {item.detail[:80]}{replayed}"
            )
        counts = store.counts_by_reason()
        print("totals: " + (", ".join(f"{r}={n}" for r, n in sorted(counts.items())) or "none"))
        return 0
    if args.action == "show":
        letter = store.get(args.id)
        if letter is None:
            print(f"error: no dead letter {args.id}", file=sys.stderr)
            return 2
        print(f"id:        {letter.id}\nreceived:  {letter.received_at}\ntopic:     {letter.topic}")
        print(
            f"device:    {letter.device_id}\nreason:    {letter.reason}\ndetail:    {letter.detail}"
        )
        print(f"replayed:  {letter.replayed_at or 'no'}\npayload ({len(letter.payload)} bytes):")
        print(f"  text: {letter.payload[:2000].decode('utf-8', 'replace')}")
        print(f"  hex:  {letter.payload[:256].hex(' ')}")
        return 0
    return _replay(args, settings, store)


def _replay(args: argparse.Namespace, settings: Settings, store: DeadLetterStore) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if args.ids:
        letters = [letter for i in args.ids if (letter := store.get(i)) is not None]
    else:
        letters = store.list(args.reason, args.device, args.limit, include_replayed=False)
    letters = [letter for letter in letters if letter.topic.startswith("scc/")]
    partial = [letter for letter in letters if is_truncated(letter.detail)]
    if partial:  # only the start of an oversized message was kept: replaying it would lie
        print(f"not replayed (only a prefix kept): {' '.join(str(x.id) for x in partial)}")
        letters = [letter for letter in letters if not is_truncated(letter.detail)]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        infos = []

        def publish(topic: str, payload: bytes) -> None:
            infos.append(client.publish(topic, payload, qos=1))

        count = store.replay(letters, publish)
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()
    print(f"replayed {count} dead letters through {settings.mqtt_host}:{settings.mqtt_port}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Create, list or revoke API tokens (a new token is printed once, on stdout)."""
    from sqlalchemy.orm import Session

    from gateway.api import auth

    engine = make_engine(_settings(args).database_url)
    with Session(engine) as session, session.begin():
        if args.action == "create":
            try:
                issued = auth.issue_token(session, args.role, args.node, args.name)
            except ValueError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            print(f"token {issued.prefix}: role {issued.role} at {issued.node}", file=sys.stderr)
            print("shown once; it is stored hashed and cannot be shown again:", file=sys.stderr)
            print(issued.token)
        elif args.action == "list":
            for token, code in auth.list_tokens(session):
                state = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active"
                print(f"{token.prefix}  {token.role:12} {code:10} {state:18} {token.name}")
        elif not auth.revoke_token(session, args.prefix):
            print(f"error: no token {args.prefix!r}", file=sys.stderr)
            return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Services, registry, gateway and a simulated community, with a live summary."""
    from gateway.cli.demo import run_demo

    return run_demo(args)


def _add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gateway.api.auth import ROLES

    token = sub.add_parser("token", help="API tokens (the first admin token comes from here)")
    _add_common(token)
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--node", required=True, help="scope node code, e.g. ST1 for everything")
    create.add_argument("--name", required=True, help="who or what uses the token")
    token_sub.add_parser("list", help="list tokens (never their secrets)")
    revoke = token_sub.add_parser("revoke", help="revoke a token by its prefix")
    revoke.add_argument("prefix")
    token.set_defaults(func=cmd_token)


def _add_scale_options(run: argparse.ArgumentParser) -> None:
    scale = run.add_argument_group("several processes on one shared subscription")
    scale.add_argument("--workers", type=int, help="gateway processes sharing the subscription")
    scale.add_argument("--worker-index", type=int, help="this process: 0 .. workers-1")
    scale.add_argument(
        "--partitioned",
        action="store_true",
        default=None,
        help="worker mode even with one worker (rules through partition topics)",
    )
    scale.add_argument("--rule-partitions", type=int, help="rule partitions (same on all)")
    scale.add_argument("--share-group", help="shared subscription group name")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    services.add_cli(sub)

    run = sub.add_parser("run", help="run the gateway")
    _add_common(run)
    run.add_argument("--name", help="gateway name (MQTT client id scc-gateway-<name>-<random>)")
    run.add_argument("--mqtt-host")
    run.add_argument("--mqtt-port", type=int)
    run.add_argument("--influx-url")
    run.add_argument("--influx-database")
    run.add_argument("--api-port", type=int, default=8080, help="REST API port (0: none)")
    run.add_argument("--rules-dir", type=Path, help="site rules overriding the defaults")
    _add_scale_options(run)
    run.set_defaults(func=cmd_run)

    reg = sub.add_parser("registry", help="device registry")
    _add_common(reg)
    reg_sub = reg.add_subparsers(dest="action", required=True)
    load = reg_sub.add_parser("load", help="load hierarchy.yaml + devices.csv from a folder")
    load.add_argument("path", type=Path)
    reg_sub.add_parser("stats", help="count nodes and devices")
    reg.set_defaults(func=cmd_registry)

    dead = sub.add_parser("deadletter", help="rejected messages")
    _add_common(dead)
    dead.add_argument("--mqtt-host")
    dead.add_argument("--mqtt-port", type=int)
    dead_sub = dead.add_subparsers(dest="action", required=True)
    for name in ("list", "replay"):
        p = dead_sub.add_parser(name)
        p.add_argument("--reason")
        p.add_argument("--device")
        p.add_argument("--limit", type=int, default=50)
        if name == "replay":
            p.add_argument("ids", nargs="*", type=int, help="dead-letter ids (default: filter)")
    show = dead_sub.add_parser("show")
    show.add_argument("id", type=int)
    dead.set_defaults(func=cmd_deadletter)

    _add_token_parser(sub)

    demo = sub.add_parser("demo", help="run the whole thing with a simulated community")
    demo.add_argument("--state-dir", type=Path, default=Path("var/demo"))
    demo.add_argument("--mqtt-port", type=int, default=1883)
    demo.add_argument("--influx-port", type=int, default=8086)
    demo.add_argument("--api-port", type=int, default=8080)
    demo.add_argument("--interval", type=float, default=20.0, help="device report interval (s)")
    demo.add_argument("--bad-rate", type=float, default=0.01)
    demo.add_argument("--duration", type=float, default=0, help="seconds (0: until Ctrl-C)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
