"""A loopback stand-in for Metabase that lets `cinema metabase provision` log in, records
the ClickHouse connection it asks Metabase to add, and refuses that request, so the
command stops there. (The whole exchange is tested against the recorded contract in
test_metabase_provision.py; this only learns the connection details.)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

ANSWERS: dict[tuple[str, str], tuple[int, Any]] = {
    ("GET", "/api/health"): (200, {"status": "ok"}),
    ("GET", "/api/session/properties"): (200, {"has-user-setup": True}),
    ("POST", "/api/session"): (200, {"id": "stand-in-session"}),
    ("PUT", "/api/setting/anon-tracking-enabled"): (204, None),
    ("GET", "/api/database"): (200, {"data": [], "total": 0}),
}


class RecordingMetabase:
    def __init__(self) -> None:
        self.database_details: dict[str, Any] | None = None
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if (self.command, self.path) == ("POST", "/api/database"):
                    recorder.database_details = body["details"]
                status, answer = ANSWERS.get((self.command, self.path), (400, {"message": "a test's stand-in"}))
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordingMetabase:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
