"""Loopback stand-ins that learn who logs in: a PostgreSQL port and a ClickHouse HTTP port.

Each speaks its protocol far enough for a real client (psycopg2's libpq, clickhouse-connect)
to send its user, database and password, records them, and then refuses the login, so
the command under test stops there with an authentication error.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104
CLEARTEXT_PASSWORD = 3


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    database: str


def _exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client hung up")
        data += chunk
    return data


@dataclass
class PostgresDoor:
    """A PostgreSQL server that asks for a cleartext password and refuses every one."""

    logins: list[Login] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                try:
                    self._one(connection)
                except (ConnectionError, OSError):
                    continue

    def _one(self, connection: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!i", _exactly(connection, 4))
            body = _exactly(connection, length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                break
            connection.sendall(b"N")  # no TLS, no GSS: carry on in the clear
        words = body[4:].split(b"\0")
        startup = dict(zip(words[0::2], words[1::2], strict=False))
        connection.sendall(b"R" + struct.pack("!ii", 8, CLEARTEXT_PASSWORD))
        kind = _exactly(connection, 1)
        (length,) = struct.unpack("!i", _exactly(connection, 4))
        password = _exactly(connection, length - 4).rstrip(b"\0")
        assert kind == b"p", kind
        user = startup.get(b"user", b"").decode()
        self.logins.append(Login(user, password.decode(), startup.get(b"database", user.encode()).decode()))
        error = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed (a test's stand-in)\0\0"
        connection.sendall(b"E" + struct.pack("!i", len(error) + 4) + error)

    def close(self) -> None:
        self._socket.close()


class ClickHouseDoor:
    """A ClickHouse HTTP interface that answers every request with an authentication error."""

    def __init__(self) -> None:
        self.logins: list[Login] = []
        door = self

        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user, password = self.headers.get("X-ClickHouse-User", ""), self.headers.get("X-ClickHouse-Key", "")
                authorization = self.headers.get("Authorization", "")
                if authorization.startswith("Basic "):
                    user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
                door.logins.append(Login(user, password, query.get("database", ["default"])[0]))
                body = b"Code: 516. DB::Exception: a test's stand-in: Authentication failed. (AUTHENTICATION_FAILED)"
                self.send_response(401)
                self.send_header("X-ClickHouse-Exception-Code", "516")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
