"""A real webhook receiver for the tests: an HTTP server on loopback, in a thread of the test
process, answering each POST with the next status of its script (the last one repeats)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    answered: int


class Receiver:
    def __init__(
        self, statuses: list[int], *, hold_first: bool = False, location: str = ""
    ) -> None:
        self.statuses, self.hold_first = list(statuses), hold_first
        self.location = location  # sent as Location with every answer, when given
        self.requests: list[Received] = []
        self.held = threading.Event()  # the first request arrived and is being held
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._taken = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/signalfan?via=test"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, hold = receiver._take()
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, body, status))
                if hold:
                    receiver.held.set()
                    receiver.released.wait(120)
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _take(self) -> tuple[int, bool]:
        with self._lock:
            self._taken += 1
            hold = self.hold_first and self._taken == 1
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return status, hold

    def start(self) -> Receiver:
        # A client gone while a request is held (a killed worker) is not the test's error.
        self._server.handle_error = lambda *args: None  # type: ignore[method-assign]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
