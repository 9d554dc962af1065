"""The HTTP server lifecycle the three stand-ins share: bind 127.0.0.1, serve, stop cleanly.

Why one base: every stand-in needs the same delicate stop. The clients under test (requests,
httplib2, httpx, the worker itself) keep connections alive, and a keep-alive handler thread of
``ThreadingHTTPServer`` waits on its socket until the *client* hangs up. Stopping only the accept
loop would leave those threads parked and their sockets open (a ResourceWarning in the tests, a
port still held). So the server remembers every accepted connection, and stopping shuts them down,
waits until their handler threads have closed them, and only then releases the listening socket.

A stand-in subclasses :class:`HttpStandIn`, names its handler (a :class:`StandInHandler`) and
keeps its own protocol logic; the handler reaches the stand-in as ``self.server.standin``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Self, TypeVar

__all__ = ["LOOPBACK", "HttpStandIn", "StandInHandler", "StandInServer"]

_StandInT = TypeVar("_StandInT")

#: Address every stand-in binds: loopback only, a stand-in must never be reachable from outside.
LOOPBACK: Final = "127.0.0.1"

_SERVE_POLL_SECONDS: Final = 0.05  # how long shutdown() may wait for the accept loop to notice
_HANG_UP_SECONDS: Final = 5.0  # how long stop() waits for handler threads to close their sockets


class StandInServer(ThreadingHTTPServer, Generic[_StandInT]):
    """``ThreadingHTTPServer`` that knows its stand-in and every connection it has open.

    A connection is remembered from the moment it is accepted until its socket is really closed
    (``shutdown_request``), so :meth:`hang_up` can end idle keep-alive ones and wait for them.
    """

    daemon_threads = True  # a handler thread never keeps the test process alive
    block_on_close = False  # stop() waits for connections itself (hang_up), with a deadline
    allow_reuse_address = True
    request_queue_size = 128  # bursts of parallel clients (benchmarks) must not be refused

    def __init__(
        self, standin: _StandInT, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
    ) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember each accepted connection before its handler thread starts."""
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection only once it is closed: :meth:`hang_up` waits for exactly that."""
        try:
            super().shutdown_request(request)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up; anything else is a bug worth a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def hang_up(self, timeout: float = _HANG_UP_SECONDS) -> None:
        """Shut every open connection down and wait (at most ``timeout``) until all are closed.

        ``shutdown(SHUT_RDWR)`` makes a handler blocked on a keep-alive read see EOF, so its thread
        ends and closes the socket itself; a handler still answering a request finishes first.
        """
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):  # the client closed it already
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.connections_lock:
                if not self.connections:
                    return
            time.sleep(0.005)


class StandInHandler(BaseHTTPRequestHandler):
    """What every stand-in's request handler has in common.

    HTTP/1.1 so clients keep connections alive as they do with the real services; no Nagle, so an
    answer written in more than one ``send`` is not held back by the client's delayed ACK (~40 ms
    on a reused connection, which would dominate latencies the tests and benchmarks measure).
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: StandInServer[Any]

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging: it would clutter test output and slow the benchmarks down.

        Each stand-in records the requests it saw (``requests``) for assertions instead.
        """


class HttpStandIn:
    """Lifecycle of a stand-in served from daemon threads on 127.0.0.1.

    Subclasses set :attr:`handler_class` (and :attr:`thread_name`), and may override
    :meth:`_after_stop` to release what they hold besides sockets. Usable as a context manager;
    ``start`` returns the stand-in so ``standin = Sub().start()`` works too.
    """

    host: Final = LOOPBACK
    #: The request handler; it reaches the stand-in as ``self.server.standin``.
    handler_class: ClassVar[type[StandInHandler]]
    #: Name of the serving thread, to tell stand-ins apart in thread dumps.
    thread_name: ClassVar[str] = "standin"

    def __init__(self, *, port: int = 0) -> None:
        #: The port asked for; 0 lets the system choose a free one (see :attr:`port`).
        self.requested_port = port
        self._server: StandInServer[Self] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind 127.0.0.1 (a free port unless one was given) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        server = StandInServer(self, (self.host, self.requested_port), self.handler_class)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _SERVE_POLL_SECONDS},
            name=self.thread_name,
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, hang up keep-alive connections, release the listening socket.

        Safe to call twice or before ``start``. :meth:`_after_stop` runs in every case.
        """
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            if thread is not None:
                thread.join(timeout=5)
            server.hang_up()
            server.server_close()
        self._after_stop()

    def _after_stop(self) -> None:
        """Hook for what a stand-in holds besides sockets (e.g. database connections)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the stand-in is serving (between ``start`` and ``stop``)."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port actually bound (the chosen one when ``port=0`` was asked for)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://{self.host}:{self.port}"
