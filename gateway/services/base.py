"""Local servers for development, demos and tests: what every one of them shares.

Each server runs as a child process in its own process group with every file it writes
(configuration, pid file, logs, data) under one state directory, and listens on 127.0.0.1
only. :class:`ServerConfig` describes one server; :class:`ManagedProcess` starts, probes,
stops and kills it. The servers themselves are in ``mosquitto`` and ``influxdb``; the
long-lived pair of ``services up|down|status`` in ``manager``.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


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
