"""Create or complete `.env` from `.env_template`, generating every empty secret.

Standard library only, so `python3 -m cinema.envfile` works before anything is
installed (the Docker quick start needs nothing but this file and Docker).
An existing `.env` keeps its values; keys the template gained since are appended.

A new `.env` also gets ports of its own: the template's defaults unless another
checkout of this user has them (a small registry, PORTS_REGISTRY) or something
listens on them now, else the next free ones. Two checkouts can then run side by side.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

SECRET_KEY = re.compile(r"^[A-Z0-9_]+_(PASSWORD|SECRET|KEY)$")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
# The ports the embedded stack and the loader listen on, on loopback.
PORT_KEYS = ("POSTGRES_PUBLICIST_PORT", "POSTGRES_SUBSCRIPTION_PORT", "LOADER_METRICS_PORT")


def ports_registry() -> Path:
    """Which checkout of this user has which ports (XDG state folder)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "cinema-analytics" / "ports.json"


def new_secret() -> str:
    """A URL-safe token (it survives connection strings, YAML and shells unquoted) that
    also meets the usual password rules: Metabase, for one, insists on a digit."""
    while True:
        token = secrets.token_urlsafe(24)
        if any(c.isdigit() for c in token) and any(c.islower() for c in token) and any(c.isupper() for c in token):
            return token


@dataclass(frozen=True)
class EnvUpdate:
    added: list[str]
    # Ports chosen for this checkout, and the checkouts that had the template's defaults.
    ports: dict[str, int] = field(default_factory=dict)
    defaults_taken_by: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.added:
            return ".env: up to date"
        line = f".env: {len(self.added)} setting(s) added"
        if self.ports:
            line += "; ports " + ", ".join(f"{key}={port}" for key, port in self.ports.items())
        if self.defaults_taken_by:
            line += f" (the defaults are taken: {', '.join(self.defaults_taken_by)})"
        return line


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _keys(lines: list[str]) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in map(ASSIGNMENT.match, lines) if m}


class _Registry:
    """The registry file, locked while a checkout's ports are chosen and recorded."""

    def __init__(self, path: Path, checkout: Path) -> None:
        self.path = path
        self.checkout = str(checkout)

    def __enter__(self) -> _Registry:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a+")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        self.handle.seek(0)
        text = self.handle.read()
        entries: dict[str, dict[str, int]] = json.loads(text) if text.strip() else {}
        # A checkout whose .env is gone gives its ports back.
        self.entries = {other: ports for other, ports in entries.items() if (Path(other) / ".env").is_file()}
        return self

    def others(self) -> dict[int, str]:
        return {
            port: other for other, ports in self.entries.items() if other != self.checkout for port in ports.values()
        }

    def record(self, ports: dict[str, int]) -> None:
        self.entries[self.checkout] = {**self.entries.get(self.checkout, {}), **ports}
        self.handle.seek(0)
        self.handle.truncate()
        json.dump(self.entries, self.handle, indent=2, sort_keys=True)
        self.handle.flush()

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _choose_ports(defaults: dict[str, int], others: dict[int, str]) -> tuple[dict[str, int], list[str]]:
    chosen: dict[str, int] = {}
    owners: list[str] = []
    for key, default in defaults.items():
        if default in others and others[default] not in owners:
            owners.append(others[default])
        port = default
        while port in others or port in chosen.values() or _listening(port):
            port += 1
        chosen[key] = port
    return chosen, owners


def write_env(template: Path, target: Path, registry: Path | None = None) -> EnvUpdate:
    """Write or extend `target`; return the keys it added and the ports it chose."""
    template_lines = template.read_text().splitlines()
    existing = target.read_text().splitlines() if target.exists() else []
    have = _keys(existing)
    missing = [key for key in _keys(template_lines) if key not in have]
    if not missing:
        return EnvUpdate([])
    defaults = {key: int(value) for key, value in _keys(template_lines).items() if key in PORT_KEYS and value.isdigit()}
    with _Registry(registry or ports_registry(), target.resolve().parent) as ports:
        chosen, owners = _choose_ports({k: v for k, v in defaults.items() if k in missing}, ports.others())
        kept = {key: int(have[key]) for key in PORT_KEYS if have.get(key, "").isdigit()}
        ports.record({**kept, **chosen})

    def render(line: str) -> str:
        match = ASSIGNMENT.match(line)
        if match and match.group(1) in chosen:
            return f"{match.group(1)}={chosen[match.group(1)]}"
        if match and not match.group(2) and SECRET_KEY.match(match.group(1)):
            return f"{match.group(1)}={new_secret()}"
        return line

    if not existing:
        target.write_text("\n".join(render(line) for line in template_lines) + "\n")
        target.chmod(0o600)
    else:
        added = [render(line) for line in template_lines if (m := ASSIGNMENT.match(line)) and m[1] in missing]
        target.write_text("\n".join([*existing, "", "# added from .env_template", *added]) + "\n")
    return EnvUpdate(sorted(missing), chosen, owners)


def main() -> int:
    root = Path.cwd()
    print(write_env(root / ".env_template", root / ".env").describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
