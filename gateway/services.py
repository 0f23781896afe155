"""Local Mosquitto and InfluxDB servers for development, demos and tests.

Each server runs as a child process in its own process group with every file it
writes (configuration, pid file, logs, data) under one state directory, and
listens on 127.0.0.1 only. :class:`ManagedProcess` starts, probes, stops and
kills one server; :class:`Services` and :func:`add_cli` drive a long-lived pair
under ``var/`` for the ``services up|down|status`` command.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self, TypedDict

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_MIB = 1024 * 1024


class ServiceError(RuntimeError):
    """Base class for errors managing the local servers."""


class BinaryNotFoundError(ServiceError):
    """The server executable is not installed."""


class ServiceStartError(ServiceError):
    """The server exited early or did not answer in time."""


class PortInUseError(ServiceError):
    """The requested port is taken by a program that is not ours."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Tell whether a listener could bind 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: TIME_WAIT leftovers do not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def find_binary(name: str) -> str:
    """Locate a server executable on PATH or in the sbin directories Debian uses."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    found = shutil.which(name, path=search)
    if found is None:
        raise BinaryNotFoundError(
            f"{name!r} is not installed (looked on PATH and in {', '.join(_SBIN_DIRS)}): "
            "run `make demo` or `make test`, which install it, "
            "or `apt-get install mosquitto influxdb`"
        )
    return found


def find_dynsec_plugin() -> str:
    """Locate ``mosquitto_dynamic_security.so`` (Debian puts it under the multiarch dir)."""
    candidates = [
        *sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")),
        Path("/usr/lib/mosquitto_dynamic_security.so"),
        Path("/usr/local/lib/mosquitto_dynamic_security.so"),
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    raise BinaryNotFoundError(
        "the Mosquitto dynamic-security plugin (mosquitto_dynamic_security.so) is not installed"
    )


def probe_mqtt(port: int, timeout: float = 1.0) -> bool:
    """Do an MQTT 3.1.1 CONNECT/CONNACK round trip; any CONNACK means the broker answers."""
    client_id = f"scc-probe-{secrets.token_hex(4)}".encode()
    # Protocol name "MQTT", level 4, clean session, keep-alive 10 s.
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            if reply[:2] != b"\x20\x02":
                return False
            if reply[3] == 0:
                sock.sendall(b"\xe0\x00")  # DISCONNECT, so no will and no log noise
            return True
    except OSError:
        return False


def probe_influxdb(port: int, timeout: float = 1.0) -> bool:
    """Return True when ``GET /ping`` on 127.0.0.1:``port`` answers 204."""
    try:
        with _opener().open(f"http://{LOOPBACK}:{port}/ping", timeout=timeout) as resp:
            return int(resp.status) == 204
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class ServerConfig(abc.ABC):
    """What every managed server has: a loopback port and a state directory."""

    port: int
    state_dir: Path

    name: ClassVar[str]
    binary: ClassVar[str]
    scheme: ClassVar[str]
    drop_env_prefixes: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.name}: port {self.port} is outside 1..65535")
        # Absolute, because the servers resolve relative paths against their own cwd.
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())

    @property
    def url(self) -> str:
        """Where clients reach the server."""
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        """The rendered configuration file."""
        return self.state_dir / f"{self.binary}.conf"

    @property
    def pid_path(self) -> Path:
        """The pid file written after start."""
        return self.state_dir / f"{self.binary}.pid"

    @property
    def output_path(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.state_dir / f"{self.binary}.log"

    @property
    def log_paths(self) -> tuple[Path, ...]:
        """Every log file worth showing when the server fails."""
        return (self.output_path,)

    def environment(self) -> dict[str, str]:
        """The child's environment: ours, minus variables that would override the config."""
        return {k: v for k, v in os.environ.items() if not k.startswith(self.drop_env_prefixes)}

    def prepare(self) -> None:
        """Create the state directories and write the configuration file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render(), encoding="utf-8")

    @abc.abstractmethod
    def render(self) -> str:
        """Return the configuration file text."""

    @abc.abstractmethod
    def argv(self, binary: str) -> list[str]:
        """Return the command line that runs the server with the rendered config."""

    @abc.abstractmethod
    def probe(self, timeout: float = 1.0) -> bool:
        """Tell whether the server answers its protocol on :attr:`port`."""


@dataclass(frozen=True)
class MosquittoConfig(ServerConfig):
    """A loopback Mosquitto 2.0 broker whose persistent sessions survive restarts."""

    persistence: bool = True
    allow_anonymous: bool = True  # until the broker moves to dynamic security
    max_inflight_messages: int = 1000
    # Deep per-client queues: a persistent session holds the backlog while the gateway is down.
    max_queued_messages: int = 1_000_000
    # The only packet limit on the way to the gateway (it advertises none): above it a
    # publisher is refused (MQTT 5: DISCONNECT 0x95); below it, every message reaches us
    # and one over max_payload_bytes becomes an oversized dead letter (README, Limits).
    max_packet_size: int = 16 * _MIB
    autosave_interval: int = 30
    #: Opt-in: anonymous access off, logins and ACLs from the dynamic-security plugin.
    dynsec: bool = False

    name: ClassVar[str] = "mosquitto"
    binary: ClassVar[str] = "mosquitto"
    scheme: ClassVar[str] = "mqtt"

    @property
    def broker_log_path(self) -> Path:
        """Mosquitto's own log (``log_dest file``)."""
        return self.state_dir / "broker.log"

    @property
    def log_paths(self) -> tuple[Path, ...]:
        """Broker log first, then stdout/stderr (start-up errors land there)."""
        return (self.broker_log_path, self.output_path)

    @property
    def dynsec_config_path(self) -> Path:
        """The plugin's own state (clients, roles, ACLs), kept across restarts."""
        return self.state_dir / "dynamic-security.json"

    @property
    def dynsec_admin_path(self) -> Path:
        """The plugin admin's login (mode 0600), written with the first config."""
        return self.state_dir / "dynsec-admin.json"

    def dynsec_admin(self) -> tuple[str, str]:
        """``(username, password)`` of the dynamic-security admin client."""
        data = json.loads(self.dynsec_admin_path.read_text(encoding="utf-8"))
        return str(data["username"]), str(data["password"])

    def prepare(self) -> None:
        """Write the config; in dynsec mode also the first plugin file and admin login."""
        super().prepare()
        if self.dynsec and not self.dynsec_config_path.exists():
            from gateway.provisioning.dynsec import write_initial_config

            username, password = "scc-dynsec-admin", secrets.token_urlsafe(24)
            fd = os.open(self.dynsec_admin_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"username": username, "password": password}, handle)
            write_initial_config(self.dynsec_config_path, username, password)

    def _dynsec_lines(self) -> list[str]:
        if not self.dynsec:
            return []
        return [
            f"plugin {find_dynsec_plugin()}",
            f"plugin_opt_config_file {self.dynsec_config_path}",
        ]

    def render(self) -> str:
        """Render ``mosquitto.conf``."""
        on_off = {True: "true", False: "false"}
        # Running as root, mosquitto would drop to user "mosquitto", which cannot write the
        # state directory; naming the current user keeps it as is.
        user = pwd.getpwuid(os.getuid()).pw_name
        return "\n".join(
            [
                "# Written by gateway.services on every start; edits are overwritten.",
                "per_listener_settings false",
                f"listener {self.port} {LOOPBACK}",
                f"allow_anonymous {on_off[self.allow_anonymous and not self.dynsec]}",
                *self._dynsec_lines(),
                f"persistence {on_off[self.persistence]}",
                f"persistence_location {self.state_dir}/",
                "persistence_file mosquitto.db",
                f"autosave_interval {self.autosave_interval}",
                f"max_inflight_messages {self.max_inflight_messages}",
                f"max_queued_messages {self.max_queued_messages}",
                f"max_packet_size {self.max_packet_size}",
                "# persistent_client_expiration is left unset: persistent sessions never expire.",
                f"log_dest file {self.broker_log_path}",
                *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
                "connection_messages true",
                "log_timestamp true",
                "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                f"user {user}",
                "",
            ]
        )

    def argv(self, binary: str) -> list[str]:
        """``mosquitto -c <config>``."""
        return [binary, "-c", str(self.config_path)]

    def probe(self, timeout: float = 1.0) -> bool:
        """MQTT CONNECT/CONNACK round trip."""
        return probe_mqtt(self.port, timeout)


@dataclass(frozen=True)
class InfluxConfig(ServerConfig):
    """A loopback InfluxDB 1.x server (Debian's ``influxd``)."""

    bind_port: int  # RPC/backup service; its default 8088 would collide between servers
    max_body_size: int = 0  # 0 = unlimited, so large batches are never refused

    name: ClassVar[str] = "influxdb"
    binary: ClassVar[str] = "influxd"
    scheme: ClassVar[str] = "http"
    # INFLUXDB_HTTP_BIND_ADDRESS and friends override the config file in influxd 1.x.
    drop_env_prefixes: ClassVar[tuple[str, ...]] = ("INFLUXDB_",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.bind_port < 65536 or self.bind_port == self.port:
            raise ValueError(f"influxdb: bind_port {self.bind_port} must be a free, other port")

    def render(self) -> str:
        """Render ``influxd.conf`` (TOML)."""
        meta, data, wal = (json.dumps(str(self.state_dir / d)) for d in ("meta", "data", "wal"))
        return f"""# Written by gateway.services on every start; edits are overwritten.
# Upstream spells the phone-home switch reporting-disabled, Debian's build
# reporting-enabled; each build ignores the key it does not know.
reporting-disabled = true
reporting-enabled = false
bind-address = "{LOOPBACK}:{self.bind_port}"

[meta]
  dir = {meta}

[data]
  dir = {data}
  wal-dir = {wal}
  wal-fsync-delay = "0s"
  query-log-enabled = false
  # Every device is a series with its own device_id value: 1.x would refuse a tag's
  # 100,001st value and a database's 1,000,001st series (a district has a million devices).
  max-series-per-database = 0
  max-values-per-tag = 0

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{LOOPBACK}:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  max-body-size = {self.max_body_size}

[logging]
  level = "info"
  suppress-logo = true

[continuous_queries]
  enabled = false
"""

    def prepare(self) -> None:
        """Create meta/data/wal directories and write the configuration."""
        super().prepare()
        for sub in ("meta", "data", "wal"):
            (self.state_dir / sub).mkdir(exist_ok=True)

    def argv(self, binary: str) -> list[str]:
        """``influxd run -config <config>`` (logs go to stderr in 1.x, captured to a file)."""
        return [binary, "run", "-config", str(self.config_path)]

    def probe(self, timeout: float = 1.0) -> bool:
        """``GET /ping`` answers 204."""
        return probe_influxdb(self.port, timeout)


def _process_matches(pid: int, config: ServerConfig) -> bool:
    """True if ``pid`` is alive and is ``config.binary`` running ``config.config_path``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # A zombie (or a process tearing down) has an empty cmdline, so it never matches.
    return (
        bool(argv)
        and os.path.basename(argv[0]) == config.binary.encode()
        and os.fsencode(config.config_path) in argv
    )


def _proc_state(pid: int) -> tuple[str, str] | None:
    """``(comm, state)`` from /proc/<pid>/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    head, _, tail = stat.rpartition(")")
    return head.partition("(")[2], tail.split()[0]


def _reap_if_our_zombie(pid: int, config: ServerConfig) -> None:
    # A server spawned earlier by this same process (e.g. `services up` then `down` in one
    # test) stays a zombie until we wait for it; the kernel keeps comm for zombies.
    if _proc_state(pid) == (config.binary[:15], "Z"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _tail(paths: tuple[Path, ...], lines: int = 20) -> str:
    parts = []
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or "(no log output)"


class ManagedProcess:
    """One server process: start, wait until it answers, stop, kill, restart.

    Pass ``pid`` to take over a server started earlier (e.g. by another ``services up``);
    the caller must have checked it with :meth:`attach` or equivalent.
    """

    def __init__(
        self, config: ServerConfig, *, start_timeout: float = START_TIMEOUT, pid: int | None = None
    ) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.returncode: int | None = None
        self._pid = pid

    @classmethod
    def attach(cls, config: ServerConfig) -> ManagedProcess | None:
        """Return a handle on the server named by ``config.pid_path``, or None.

        A stale pid file (dead process, or a pid now used by another program) is removed.
        """
        try:
            pid = int(config.pid_path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        if _process_matches(pid, config):
            proc = cls(config, pid=pid)
            if proc.is_running():
                return proc
        _reap_if_our_zombie(pid, config)
        logger.info("removing stale pid file %s (pid %d)", config.pid_path, pid)
        config.pid_path.unlink(missing_ok=True)
        return None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._pid if self.is_running() else None

    @property
    def port(self) -> int:
        """The client port."""
        return self.config.port

    @property
    def url(self) -> str:
        """The client URL (``mqtt://`` or ``http://``)."""
        return self.config.url

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.config.name} pid={self._pid} url={self.url}>"

    def is_running(self) -> bool:
        """Tell whether the process is alive (reaping it if it was our child and exited)."""
        pid = self._pid
        if pid is None:
            return False
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by an earlier `services up`)
            state = _proc_state(pid)
            alive = state is not None and state[1] not in ("Z", "X")
        else:
            alive = done == 0
            if not alive:
                self.returncode = os.waitstatus_to_exitcode(status)
        if not alive:
            self._pid = None
        return alive

    def start(self, timeout: float | None = None) -> None:
        """Render the config, spawn the server and wait until it answers."""
        if self.is_running():
            raise ServiceError(f"{self.config.name} is already running (pid {self._pid})")
        binary = find_binary(self.config.binary)
        self.config.prepare()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.config.output_path.open("a", encoding="utf-8") as out:
            out.write(f"--- {stamp} starting {self.config.name} on {self.url} ---\n")
        self._pid = os.posix_spawn(
            binary,
            self.config.argv(binary),
            self.config.environment(),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (
                    os.POSIX_SPAWN_OPEN,
                    1,
                    str(self.config.output_path),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                    0o644,
                ),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,  # own session and process group: Ctrl-C in our terminal spares it
        )
        self.returncode = None
        self.config.pid_path.write_text(f"{self._pid}\n", encoding="utf-8")
        logger.info("started %s pid %d on %s", self.config.name, self._pid, self.url)
        self.wait_ready(self.start_timeout if timeout is None else timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll the server's protocol until it answers; kill it and raise on failure."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if not self.is_running():
                raise ServiceStartError(
                    f"{self.config.name} exited during start-up (code {self.returncode})\n"
                    + _tail(self.config.log_paths)
                )
            if self.config.probe(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                logger.debug(
                    "%s answered after %.2fs", self.config.name, time.monotonic() - started
                )
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise ServiceStartError(
                    f"{self.config.name} did not answer on {self.url} within {timeout:.0f}s\n"
                    + _tail(self.config.log_paths)
                )
            time.sleep(_POLL)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; remove the pid file."""
        if self.is_running():
            self._signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                logger.warning(
                    "%s ignored SIGTERM for %.0fs; killing it", self.config.name, timeout
                )
                self._signal(signal.SIGKILL)
                self._wait_exit(STOP_TIMEOUT)
            logger.info("stopped %s", self.config.name)
        self.config.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL without a clean shutdown (for fault tests); the pid file stays, as in a crash."""
        if self.is_running():
            self._signal(signal.SIGKILL)
            self._wait_exit(STOP_TIMEOUT)

    def restart(self, timeout: float | None = None) -> None:
        """Stop cleanly, then start again with the same config, port and state."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _signal(self, sig: signal.Signals) -> None:
        pid = self._pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)  # the whole group, in case the server forked
            else:
                os.kill(pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True


def start_mosquitto(
    state_dir: Path | str,
    port: int | None = None,
    *,
    timeout: float = START_TIMEOUT,
    dynsec: bool = False,
) -> ManagedProcess:
    """Start a broker in ``state_dir`` on ``port`` (a free one if None) and wait for it.

    ``dynsec=True``: no anonymous access; the admin login is ``config.dynsec_admin()``.
    """
    config = MosquittoConfig(port=port or free_port(), state_dir=Path(state_dir), dynsec=dynsec)
    proc = ManagedProcess(config)
    proc.start(timeout)
    return proc


def start_influxdb(
    state_dir: Path | str, port: int | None = None, *, timeout: float = START_TIMEOUT
) -> ManagedProcess:
    """Start InfluxDB in ``state_dir`` on ``port`` (a free one if None) and wait for it."""
    port = port or free_port()
    bind_port = free_port()
    while bind_port == port:
        bind_port = free_port()
    config = InfluxConfig(port=port, state_dir=Path(state_dir), bind_port=bind_port)
    proc = ManagedProcess(config)
    proc.start(timeout)
    return proc


# --- InfluxDB HTTP helpers (stdlib only; used by tests and the CLI) -------------------------


def _opener() -> urllib.request.OpenerDirector:
    # Never route loopback traffic through an http_proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def influx_query(url: str, query: str, *, db: str | None = None, timeout: float = 10.0) -> Any:
    """POST an InfluxQL ``query`` to ``url``/query and return the decoded JSON.

    Raises :class:`ServiceError` if the server reports an error for any statement.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    form = {"q": query} | ({"db": db} if db else {})
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url.rstrip("/") + "/query", data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    try:
        with _opener().open(request, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        raise ServiceError(f"InfluxDB {url} refused {query!r}: {err.code} {detail}") from err
    except (OSError, ValueError) as err:
        raise ServiceError(f"InfluxDB {url} failed on {query!r}: {err}") from err
    errors = [r["error"] for r in body.get("results", []) if "error" in r]
    if "error" in body or errors:
        raise ServiceError(f"InfluxDB {url} refused {query!r}: {body.get('error') or errors}")
    return body


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_influx_database(url: str, name: str, *, timeout: float = 10.0) -> None:
    """``CREATE DATABASE "name"`` (a no-op if it exists)."""
    influx_query(url, f"CREATE DATABASE {_quote_ident(name)}", timeout=timeout)


def drop_influx_database(url: str, name: str, *, timeout: float = 10.0) -> None:
    """``DROP DATABASE "name"`` (a no-op if it does not exist)."""
    influx_query(url, f"DROP DATABASE {_quote_ident(name)}", timeout=timeout)


# --- The long-lived development pair under var/ ---------------------------------------------


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


# --- CLI ------------------------------------------------------------------------------------


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
