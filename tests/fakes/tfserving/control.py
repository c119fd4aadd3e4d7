"""The fake's HTTP control endpoint, for driving it when it runs as a separate process.

- `GET /state`: versions, hang/down flags and call counts, as JSON;
- `POST /events`: one event object or a list of them (see `server`); events with `at`
  run that many seconds after they arrive, the others at once.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.tfserving.server import EventError, FakeTFServing


def serve_control(fake: FakeTFServing, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Starts the control endpoint in a daemon thread; `shutdown()` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _reply(self, code: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/state":
                self._reply(200, fake.state())
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/events":
                self._reply(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                doc = json.loads(self.rfile.read(length) or b"null")
                events = doc if isinstance(doc, list) else [doc]
                now = [e for e in events if isinstance(e, dict) and "at" not in e]
                later = [e for e in events if not (isinstance(e, dict) and "at" not in e)]
                for e in now:
                    fake.apply(e)
                if later:
                    fake.timeline(later)
            except (ValueError, EventError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200, fake.state())

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, name="fake-tfserving-control", daemon=True
    ).start()
    return server
