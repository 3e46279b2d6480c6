"""A TCP proxy in front of the API whose open connections a test can cut, as a network drop does mid-stream.

It records the bytes each connection sent first (the request line and headers), so a test can check what a
client sent when it reconnected (`Last-Event-ID`).
"""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the target; `cut()` closes every open connection at once."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []
        self.cuts = 0
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="cutting-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    with self._lock:
                        self.requests.append(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every open connection (the client sees its response end mid-body)."""
        self.cuts += 1
        self._drop()

    def _drop(self) -> None:
        with self._lock:
            pairs, self._open = self._open, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def sent(self, header: str) -> list[str | None]:
        """The value of `header` in each request the clients sent (None where absent), in order."""
        values = []
        with self._lock:
            requests = list(self.requests)
        for data in requests:
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            if head.split(" ", 1)[0] not in ("GET", "POST", "PATCH", "DELETE", "PUT"):
                continue  # a body's later bytes
            found = [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]
                     if line.lower().startswith(header.lower() + ":")]
            values.append(found[0] if found else None)
        return values

    def close(self) -> None:
        self.server.close()
        self._drop()
