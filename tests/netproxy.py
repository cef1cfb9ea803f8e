"""A TCP proxy for tests that cut the database off without touching the shared server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

import sqlalchemy


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``cut()`` drops every connection and
    refuses new ones until ``restore()``, as a database restart or a network cut would;
    ``stall()`` keeps every connection open but passes no byte until ``restore()``, as a
    silent network partition or a stuck middlebox would (nothing is lost: what was sent
    meanwhile arrives after ``restore()``, as TCP would retransmit it). The proxy's own
    TCP acknowledges what it holds, so a stall never trips the client's keepalives or
    ``tcp_user_timeout``: it shows how the client copes with an answer that comes late.

    Args:
        target_host: Where to forward to.
        target_port: Its port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def url_for(self, url: str) -> str:
        """``url`` (a SQLAlchemy URL) pointed at this proxy."""
        return (
            sqlalchemy.engine.make_url(url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def cut(self) -> None:
        """Drops every open connection; new ones are closed at once."""
        self._up.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def stall(self) -> None:
        """Holds every byte, both ways, of open and new connections (none is closed)."""
        self._flowing.clear()

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """``stall()`` for the ``with`` block, then ``restore()``."""
        self.stall()
        try:
            yield
        finally:
            self.restore()

    def restore(self) -> None:
        """Forwards again (what a stall held goes on first)."""
        self._up.set()
        self._flowing.set()

    def close(self) -> None:
        """Stops the proxy."""
        self._closed = True
        self.cut()
        self._flowing.set()  # held chunks meet closed sockets: their threads end
        _close(self._server)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self._flowing.wait()
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
